"""Qwen2-Audio-7B-Instruct: per-head outputs of every language-model layer at the last real prompt token.

The prompt is the model's own chat template with the audio first, then the prompt text, and the
generation prompt added, so the last token ends the assistant header (DESIGN.md section 4).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoProcessor, Qwen2AudioForConditionalGeneration

from calm.backbones.base import (
    AUTOCAST,
    Backbone,
    precision_dtype,
    resolve_weights,
)
from calm.backbones.compiled_blocks import compile_hook_free_blocks
from calm.backbones.encoder_cut import cut_mel, merged_embeddings
from calm.backbones.hooks import LAST_TOKEN, HeadCapture, HookPoint
from calm.data.audio import preprocessing_key
from calm.errors import ConfigError
from calm.file_digests import FileDigests

# transformers 5: model.language_model.layers.N; 4.x: language_model.model.layers.N. Never the audio tower.
LM_LAYER_PATTERN = r"language_model\.(?:model\.)?layers\.({layers})\.self_attn\.o_proj$"
HOOK_POINTS = ("lm_self_attn",)
PROMPT_PLACEHOLDER = "{prompt}"


MIN_GENERATE_SECONDS = 0.1  # two audio tokens: transformers reads a one-token clip as unexpanded input


def padded_for_generation(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """`wave` with trailing silence up to MIN_GENERATE_SECONDS. A shorter clip gives one audio token, which
    transformers' Qwen2-Audio takes for a prompt its processor did not expand and fails on in `generate`;
    capture has no such path, so only generation pads (and only clips that would fail)."""
    short = int(round(MIN_GENERATE_SECONDS * sample_rate)) - len(wave)
    return np.pad(wave, (0, short)) if short > 0 else wave


class Qwen2AudioBackbone(Backbone):
    """Qwen2-Audio (or a tiny random copy of it, `tiny=True`); `load()` reads the weights, nothing before it."""

    family = "qwen2_audio"
    model_class = Qwen2AudioForConditionalGeneration
    sample_rate = 16000

    def __init__(
        self,
        name: str = "qwen2_audio",
        hub_id: str = "Qwen/Qwen2-Audio-7B-Instruct",
        path: str | None = None,
        assets_name: str | None = "Qwen2-Audio-7B-Instruct",
        revision: str | None = None,
        hook_points: list[str] | tuple[str, ...] = HOOK_POINTS,
        layers: list[int] | None = None,
        chat_template: str | None = None,
        tiny: bool = False,
        tiny_seed: int = 0,
        precision: str = "32-true",
        encoder_cut: bool = True,
        compile_blocks: bool = False,
    ) -> None:
        unknown = [p for p in hook_points if p not in HOOK_POINTS]
        if unknown or not hook_points:
            raise ConfigError(f"unknown {self.family} hook points {unknown or '[]'}", f"choose from {list(HOOK_POINTS)}")
        if tiny:
            path = self._build_tiny(path, tiny_seed)
        self.name = name
        self.hub_id = hub_id
        self.revision = revision
        self.source = resolve_weights(hub_id, path, assets_name)
        self.hook_point_names = list(hook_points)
        self.layer_subset = sorted(set(layers)) if layers is not None else None
        self.chat_template = chat_template
        self.precision = str(precision)
        # Run the audio encoder on the batch's real mel frames only (calm.backbones.encoder_cut). Exact, so
        # not part of the cache key: the captured numbers are those of the full 30 s input.
        self.encoder_cut = bool(encoder_cut)
        # torch.compile the norms and MLPs between the hooks (calm.backbones.compiled_blocks): a GPU speed-up
        # whose fused kernels round differently, hence in the cache key when on.
        self.compile_blocks = bool(compile_blocks)
        self._config: Any = None
        self._processor: Any = None
        self.model: nn.Module | None = None
        self._capture: HeadCapture | None = None

    @staticmethod
    def _build_tiny(path: str | None, seed: int) -> str:
        from calm.backbones.tiny import ensure_tiny_qwen2_audio

        if not path:
            raise ConfigError("backbone.tiny=true needs backbone.path", "set backbone.path to a folder to build it in")
        return str(ensure_tiny_qwen2_audio(Path(path).expanduser(), seed))

    @property
    def config(self) -> Any:
        """The model config (config.json only, no weights): head counts are known before loading."""
        if self._config is None:
            self._config = self.from_pretrained(AutoConfig)
        return self._config

    @property
    def processor(self) -> Any:
        """Tokenizer, feature extractor and chat template; left padding so the last token is index -1."""
        if self._processor is None:
            self._processor = self.from_pretrained(AutoProcessor)
            self._processor.tokenizer.padding_side = "left"
        return self._processor

    @property
    def text_config(self) -> Any:
        return self.config.get_text_config()

    @property
    def layer_indices(self) -> list[int]:
        total = self.text_config.num_hidden_layers
        if self.layer_subset is None:
            return list(range(total))
        outside = [i for i in self.layer_subset if not 0 <= i < total]
        if outside:
            raise ConfigError(f"backbone.layers {outside} outside the model's {total} layers",
                              f"use indices 0..{total - 1}, or null for all")
        return self.layer_subset

    def hook_points(self) -> list[HookPoint]:
        cfg = self.text_config
        layers = "|".join(str(i) for i in self.layer_indices) if self.layer_subset is not None else r"\d+"
        return [HookPoint(name, LM_LAYER_PATTERN.format(layers=layers), cfg.num_attention_heads, self.head_dim,
                          LAST_TOKEN) for name in self.hook_point_names]

    @property
    def n_heads(self) -> int:
        return len(self.layer_indices) * self.text_config.num_attention_heads * len(self.hook_point_names)

    @property
    def head_dim(self) -> int:
        cfg = self.text_config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def head_names(self) -> list[str]:
        heads = self.text_config.num_attention_heads
        return [f"{point}.L{layer}.H{head}" for point in self.hook_point_names
                for layer in self.layer_indices for head in range(heads)]

    @property
    def window_seconds(self) -> float:
        """The processor pads or cuts every clip to its feature extractor's window (30 s)."""
        return float(self.processor.feature_extractor.chunk_length)

    def template(self) -> str:
        template = self.chat_template or self.processor.chat_template
        if not template:
            raise ConfigError(f"the processor of {self.hub_id} has no chat template",
                              "set backbone.chat_template to the model's chat template")
        return template

    def render_prompt(self, text: str) -> str:
        """The chat template applied to one user turn: the audio first, then `text`, generation prompt added."""
        conversation = [{"role": "user", "content": [
            {"type": "audio", "audio": "clip"}, {"type": "text", "text": text}]}]
        rendered = self.processor.apply_chat_template(
            conversation, chat_template=self.template(), add_generation_prompt=True, tokenize=False)
        token = self.processor.audio_token
        if rendered.count(token) != 1:
            raise ConfigError(
                f"the chat template renders {rendered.count(token)} audio placeholders ({token}), not 1: {rendered!r}",
                "use a chat template that renders an audio content item as the model's audio placeholder",
            )
        if rendered.index(token) > rendered.rindex(text):
            raise ConfigError(f"the chat template puts the prompt text before the audio: {rendered!r}",
                              "use a chat template that keeps the content order (audio, then text)")
        return rendered

    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        features = self.processor.feature_extractor
        return {
            "family": self.family,
            "model": self.hub_id,
            "weights": self.weights_id(digests),
            "dtype": str(precision_dtype(self.precision)),
            "autocast": AUTOCAST.get(self.precision),
            "hook_points": [[p.name, p.pattern, p.reduce] for p in self.hook_points()],
            "position": "last_real_token",
            "prompt_format": {
                "chat_template_sha256": hashlib.sha256(self.template().encode()).hexdigest()[:16],
                "rendered": self.render_prompt(PROMPT_PLACEHOLDER),
            },
            "audio": {
                **preprocessing_key(self.sample_rate),
                "feature_size": features.feature_size, "sampling_rate": features.sampling_rate,
                "chunk_length": features.chunk_length, "n_samples": features.n_samples,
                "hop_length": features.hop_length, "n_fft": features.n_fft, "pad": "zeros_to_window",
            },
        } | ({"compiled_blocks": "torch.compile(dynamic=True): LM norms and MLPs, audio-encoder layers"} if self.compile_blocks else {})

    def load(self) -> nn.Module:
        return self.attach(self.from_pretrained(self.model_class, dtype=precision_dtype(self.precision)))

    def attach(self, model: nn.Module) -> nn.Module:
        """Use an already built model (e.g. random weights of the real dimensions in a benchmark)."""
        processor = self.processor
        self.model = model.eval()
        self._capture = HeadCapture(self.model, self.hook_points())
        if self._capture.n_heads != self.n_heads:
            raise ConfigError(
                f"found {self._capture.n_heads} heads in the loaded model, config says {self.n_heads}",
                "the weights do not match their config.json",
            )
        if processor.audio_token_id != self.config.audio_token_id:
            raise ConfigError(
                f"the tokenizer's {processor.audio_token} is id {processor.audio_token_id}, "
                f"the model expects {self.config.audio_token_id}",
                "use the processor saved with these weights",
            )
        self.compile_if_asked()
        return self.model

    def compile_if_asked(self) -> None:
        """`compile_blocks=true`: compile the loaded model's norms and MLPs between the hooked modules."""
        if self.compile_blocks:
            compile_hook_free_blocks(self.model, [path for _, path, _ in self._capture.modules])

    def collate(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Left-padded token ids; position ids count real tokens only, so padding never shifts RoPE."""
        texts = [self.render_prompt(prompt) for prompt in prompts]
        inputs = self.processor(text=texts, audio=list(waves), sampling_rate=self.sample_rate,
                                return_tensors="pt", padding=True)
        mask = inputs["attention_mask"]
        columns = torch.arange(mask.shape[1])
        return {
            "input_ids": inputs["input_ids"],
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp_min(0),
            "input_features": inputs["input_features"],
            "feature_attention_mask": inputs["feature_attention_mask"],
            "last_index": (columns * mask).argmax(-1),
        }

    def trim_for_capture(self, batch: dict[str, Any]) -> dict[str, Any]:
        """With `encoder_cut`, the mel input cut to the batch's longest clip + 2 frames already here:
        for 5 s clips a sixth of the 30 s padding is copied to the GPU. The cut in `capture` then
        finds nothing more to cut (cutting is idempotent), so the rows are the same either way."""
        if not self.encoder_cut:
            return batch
        features, mask = cut_mel(batch["input_features"], batch["feature_attention_mask"])
        return {**batch, "input_features": features, "feature_attention_mask": mask}

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The base model (audio tower + language model) only: the LM head is never computed."""
        assert self.model is not None and self._capture is not None, "call load() first"
        base = self.model.base_model
        if base is self.model:
            raise RuntimeError(f"{type(self.model).__name__} has no inner base model to run without its LM head")
        self._capture.set_positions(last_index=batch["last_index"])
        with self._capture.capturing():
            if self.encoder_cut:
                # Audio features merged here from the cut mel input; the base model then runs the LM only.
                embeds = merged_embeddings(base, batch["input_ids"], batch["input_features"],
                                           batch["feature_attention_mask"])
                base(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], use_cache=False)
            else:
                base(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"],
                    input_features=batch["input_features"],
                    feature_attention_mask=batch["feature_attention_mask"],
                    use_cache=False,
                )
        return self._capture.stacked()


    @torch.no_grad()
    def generate_texts(self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int,
                       options: dict[str, Any]) -> list[str]:
        """Answers to the chat-template prompts (greedy or sampled, per `options`); only new tokens decoded."""
        assert self.model is not None, "call load() first"
        batch = self.collate([padded_for_generation(w, self.sample_rate) for w in waves], prompts)
        dtype = next(self.model.parameters()).dtype
        inputs = {key: batch[key].to(self.model.device) for key in ("input_ids", "attention_mask",
                                                                    "feature_attention_mask")}
        inputs["input_features"] = batch["input_features"].to(self.model.device, dtype)
        tokens = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **options)
        new = tokens[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.processor.batch_decode(new, skip_special_tokens=True)]
