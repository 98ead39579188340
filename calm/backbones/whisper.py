"""Whisper (tiny.en offline): decoder self- and cross-attention heads at the last prompt token, and
encoder heads averaged over the clip's real frames. A small real pretrained model for CPU work."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from calm.backbones.base import Backbone, precision_dtype
from calm.backbones.hooks import LAST_TOKEN, MEAN_FRAMES, HeadCapture, HookPoint
from calm.data.audio import preprocessing_key
from calm.errors import ConfigError
from calm.storage.file_digests import FileDigests

HOOK_PATTERNS = {
    "decoder_self_attn": (r"decoder\.layers\.(\d+)\.self_attn\.out_proj$", LAST_TOKEN),
    "decoder_cross_attn": (r"decoder\.layers\.(\d+)\.encoder_attn\.out_proj$", LAST_TOKEN),
    "encoder_self_attn": (r"encoder\.layers\.(\d+)\.self_attn\.out_proj$", MEAN_FRAMES),
}


class WhisperBackbone(Backbone):
    """Whisper encoder-decoder; the decoder prompt is `<|startoftranscript|><|notimestamps|>`.

    With `text_prompt=True` the prompt text is given as previous-context (`<|startofprev|> text`).
    """

    family = "whisper"
    sample_rate = 16000
    window_seconds = 30.0
    listed_heads = "decoder self + cross attention (+ encoder): 72 × 64 for tiny.en"
    license = "Apache-2.0"

    def __init__(
        self,
        name: str = "whisper_tiny",
        hub_id: str = "openai/whisper-tiny.en",
        path: str | None = None,
        assets_name: str | None = "whisper-tiny.en",
        revision: str | None = None,
        hook_points: list[str] | tuple[str, ...] = tuple(HOOK_PATTERNS),
        text_prompt: bool = False,
        precision: str = "32-true",
    ) -> None:
        unknown = [p for p in hook_points if p not in HOOK_PATTERNS]
        if unknown or not hook_points:
            raise ConfigError(f"unknown Whisper hook points {unknown or '[]'}", f"choose from {list(HOOK_PATTERNS)}")
        super().__init__(name, hub_id, path, assets_name, revision, precision)
        self.hook_point_names = list(hook_points)
        self.text_prompt = text_prompt
        self.uses_prompt_text = text_prompt
        self._config: WhisperConfig | None = None
        self.model: WhisperForConditionalGeneration | None = None
        self.processor: WhisperProcessor | None = None
        self._capture: HeadCapture | None = None

    @property
    def config(self) -> WhisperConfig:
        if self._config is None:
            self._config = self.from_pretrained(WhisperConfig)
        return self._config

    def hook_points(self) -> list[HookPoint]:
        cfg = self.config
        points = []
        for name in self.hook_point_names:
            pattern, reduce = HOOK_PATTERNS[name]
            heads = cfg.encoder_attention_heads if name.startswith("encoder") else cfg.decoder_attention_heads
            points.append(HookPoint(name, pattern, heads, cfg.d_model // heads, reduce))
        return points

    @property
    def n_heads(self) -> int:
        cfg = self.config
        layers = {"encoder": cfg.encoder_layers, "decoder": cfg.decoder_layers}
        return sum(p.n_heads * layers[p.name.split("_")[0]] for p in self.hook_points())

    @property
    def head_dim(self) -> int:
        return self.hook_points()[0].head_dim

    def head_names(self) -> list[str]:
        cfg = self.config
        layers = {"encoder": cfg.encoder_layers, "decoder": cfg.decoder_layers}
        return [
            f"{p.name}.L{layer}.H{head}"
            for p in self.hook_points()
            for layer in range(layers[p.name.split("_")[0]])
            for head in range(p.n_heads)
        ]

    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        return {
            **self.weights_key(digests),
            "hook_points": [[p.name, p.pattern, p.reduce] for p in self.hook_points()],
            "position": "last_prompt_token",
            "decoder_prompt": "startofprev+text+sot+notimestamps" if self.text_prompt else "sot+notimestamps",
            "audio": {**preprocessing_key(self.sample_rate), "window_seconds": 30, "pad": "zeros_to_30s"},
        }

    def load(self) -> nn.Module:
        self.processor = self.from_pretrained(WhisperProcessor)
        self.model = self.from_pretrained(WhisperForConditionalGeneration, dtype=precision_dtype(self.precision)).eval()
        self._capture = HeadCapture(self.model, self.hook_points())
        if self._capture.n_heads != self.n_heads:
            raise ConfigError(
                f"found {self._capture.n_heads} heads in the loaded model, config says {self.n_heads}",
                "the weights do not match their config.json",
            )
        return self.model

    def _prompt_ids(self, text: str) -> list[int]:
        tok = self.processor.tokenizer
        ids = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
        if not self.text_prompt:
            return ids
        context = tok.encode(" " + text.strip(), add_special_tokens=False)
        return [tok.convert_tokens_to_ids("<|startofprev|>"), *context, *ids]

    def collate(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        if self.processor is None:
            raise RuntimeError("call load() before collate()")
        features = self.processor.feature_extractor(
            waves, sampling_rate=self.sample_rate, return_tensors="pt", return_attention_mask=True
        )
        prompt_ids = [self._prompt_ids(text) for text in prompts]
        longest = max(len(ids) for ids in prompt_ids)
        pad = self.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        decoder_ids = torch.full((len(prompt_ids), longest), pad, dtype=torch.long)
        for row, ids in enumerate(prompt_ids):
            decoder_ids[row, : len(ids)] = torch.tensor(ids)
        return {
            "input_features": features.input_features,
            "frame_mask": features.attention_mask[:, ::2],
            "decoder_input_ids": decoder_ids,
            "last_index": torch.tensor([len(ids) - 1 for ids in prompt_ids]),
        }

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Right-padded decoder prompts are causal, so the last real token never sees the padding."""
        assert self.model is not None and self._capture is not None, "call load() first"
        self._capture.set_positions(last_index=batch["last_index"], frame_mask=batch["frame_mask"])
        dtype = next(self.model.parameters()).dtype
        with self._capture.capturing():
            self.model.model(
                input_features=batch["input_features"].to(dtype),
                decoder_input_ids=batch["decoder_input_ids"],
            )
        return self._capture.stacked()

    def transcribe(self, wave: np.ndarray) -> str:
        """Greedy transcription; shows the loaded weights and processor are the real ones."""
        return self.generate_answers([wave], [""], max_new_tokens=128)[0]

    @torch.no_grad()
    def generate_texts(
        self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int, options: dict[str, Any]
    ) -> list[str]:
        """Whisper's answer is its transcription (the prompt is not a question it can follow).

        Sampling needs an explicit temperature: Whisper's generate decodes greedily without one.
        `max_length=None`: only `max_new_tokens` bounds the answer (and no warning per call says so).
        """
        assert self.model is not None and self.processor is not None, "call load() first"
        features = self.processor.feature_extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        tokens = self.model.generate(
            features.input_features.to(self.model.device, dtype),
            max_new_tokens=max_new_tokens,
            max_length=None,
            **options,
        )
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]
