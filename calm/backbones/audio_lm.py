"""One adapter for every audio-language model: per-head outputs of each language-model layer at the last
real prompt token.

What the families share lives here once: the processor call, the chat template (one user turn with the
audio, then the prompt text, generation prompt added), hook discovery on the language model's `o_proj`
inputs only, left padding with the last real token read per row, position ids over real tokens only,
the cache key, loading and zero-shot generation. A family is a `Family` description plus only what is
truly its own (often only its description; its tiny random copy for tests is built in calm.testing).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoProcessor

from calm.backbones.base import Backbone, precision_dtype
from calm.backbones.compiled_blocks import compile_hook_free_blocks
from calm.backbones.hooks import LAST_TOKEN, HeadCapture, HookPoint
from calm.data.audio import preprocessing_key
from calm.errors import ConfigError
from calm.storage.digests import text_sha256
from calm.storage.file_digests import FileDigests

# transformers 5: model.language_model.layers.N; 4.x: language_model.model.layers.N. Never the audio tower.
LM_LAYER_PATTERN = r"language_model\.(?:model\.)?layers\.({layers})\.self_attn\.o_proj$"
HOOK_POINTS = ("lm_self_attn",)
PROMPT_PLACEHOLDER = "{prompt}"
FEATURE_FIELDS = ("feature_size", "sampling_rate", "chunk_length", "n_samples", "hop_length", "n_fft")
# Processor outputs that are bookkeeping, not model inputs.
NOT_MODEL_INPUTS = ("num_audio_tokens",)


@dataclass(frozen=True)
class AudioInput:
    """How a family's processor takes a clip; the few kinds below cover the families.

    `window` says how long a clip the processor keeps: "chunk_length" (the feature extractor's window,
    longer clips are cut), "max_audio_len" (the processor's cap over several windows), or None (no cap).
    `padding` names how clips are padded (in the cache key). `per_clip_features`: run the processor clip by
    clip and pad its outputs here (ids and masks on the left, features and their masks with zeros on the
    right), for processors that pad audio to the batch's longest: their mel frames and encoder chunks at a
    clip's end would otherwise depend on the other clips of the batch. `description`: the same in words,
    as `python -m calm.backbones ls` lists it.
    """

    description: str
    window: str | None
    padding: str
    per_clip_features: bool = False


ONE_WHISPER_WINDOW = AudioInput("one 30 s Whisper window (longer clips cut)", "chunk_length", "zeros_to_window")
WHISPER_WINDOWS = AudioInput(
    "30 s Whisper windows, up to the processor's max_audio_len", "max_audio_len", "zeros_to_30s_windows"
)
WHOLE_CLIP = AudioInput(
    "whole clip, padded to the batch's longest", None, "zeros_to_longest_in_batch", per_clip_features=True
)


@dataclass(frozen=True)
class Family:
    """What one model family is: its classes, checkpoint, extras and the few rules that differ.

    `audio`: how its processor takes a clip (`AudioInput`). `position_ids`: pass positions that count real
    tokens only (1-D RoPE); False where the model works out its own (multimodal RoPE from the attention
    mask). `call_kwargs`: extra keyword arguments of the processor call (e.g. text padding where the
    processor does not pad by default).
    """

    name: str
    model_class: str
    hub_id: str
    license: str
    audio: AudioInput = WHISPER_WINDOWS
    extras: tuple[str, ...] = ()
    layer_pattern: str = LM_LAYER_PATTERN
    sub_config: str | None = None
    position_ids: bool = True
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    import_hint: str | None = None

    def model_cls(self) -> type:
        return getattr(transformers, self.model_class)


def require_extras(family: Family) -> None:
    """A clear error naming the pip extra when a package the family needs is missing."""
    for extra in family.extras:
        module = {"mistral-common": "mistral_common"}.get(extra, extra)
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"backbone family {family.name!r} needs the package {extra!r}, which is not installed",
                f"pip install 'calm[{family.name}]' (or pip install {extra})",
            )


def padded_batch(parts: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One batch from single-clip processor outputs: token ids and their mask padded on the left (pad token,
    0), every other tensor (audio features and their masks) with zeros at the end of each shorter axis."""
    batch = {}
    for key in parts[0]:
        tensors = [part[key] for part in parts]
        sizes = [max(t.shape[axis] for t in tensors) for axis in range(1, tensors[0].ndim)]
        left = key in ("input_ids", "attention_mask")
        value = pad_token_id if key == "input_ids" else 0
        padded = []
        for tensor in tensors:
            widths: list[int] = []
            for axis in reversed(range(1, tensor.ndim)):
                extra = sizes[axis - 1] - tensor.shape[axis]
                widths += [extra, 0] if left else [0, extra]
            padded.append(torch.nn.functional.pad(tensor, widths, value=value) if widths else tensor)
        batch[key] = torch.cat(padded)
    return batch


def checked_rendering(rendered: str, token: str, text: str, media: str = "audio") -> str:
    """`rendered` if it holds one placeholder `token` of the clip's `media` ("audio" or "video") before the
    prompt `text`, else a clear error."""
    if rendered.count(token) != 1:
        raise ConfigError(
            f"the chat template renders {rendered.count(token)} {media} placeholders ({token}), not 1: {rendered!r}",
            f"use a chat template that renders {'an' if media == 'audio' else 'a'} {media} content item as the "
            f"model's {media} placeholder",
        )
    if rendered.index(token) > rendered.rindex(text):
        raise ConfigError(
            f"the chat template puts the prompt text before the {media}: {rendered!r}",
            f"use a chat template that keeps the content order ({media}, then text)",
        )
    return rendered


class AudioLMBackbone(Backbone):
    """An audio-language model whose language-model heads are read; `load()` reads the weights, nothing before."""

    spec: Family
    sample_rate = 16000

    def __init__(
        self,
        *,
        name: str,
        hub_id: str,
        assets_name: str | None,
        path: str | None = None,
        revision: str | None = None,
        hook_points: list[str] | tuple[str, ...] = HOOK_POINTS,
        layers: list[int] | None = None,
        chat_template: str | None = None,
        tiny_model: str | None = None,
        tiny_seed: int = 0,
        precision: str = "32-true",
        compile_blocks: bool = False,
    ) -> None:
        unknown = [p for p in hook_points if p not in HOOK_POINTS]
        if unknown or not hook_points:
            raise ConfigError(
                f"unknown {self.family} hook points {unknown or '[]'}", f"choose from {list(HOOK_POINTS)}"
            )
        super().__init__(
            name,
            hub_id,
            path,
            assets_name,
            revision,
            precision,
            tiny_model,
            tiny_seed,
        )
        self.hook_point_names = list(hook_points)
        self.layer_subset = sorted(set(layers)) if layers is not None else None
        self.chat_template = chat_template
        # torch.compile the norms and MLPs between the hooks (calm.backbones.compiled_blocks): a GPU speed-up
        # whose fused kernels round differently, hence in the cache key when on.
        self.compile_blocks = bool(compile_blocks)
        self._config: Any = None
        self._processor: Any = None
        self.model: nn.Module | None = None
        self._capture: HeadCapture | None = None

    @property
    def family(self) -> str:
        return self.spec.name

    def needs_extras(self) -> bool:
        """Whether this configuration uses the family's extra packages (a tiny random copy never does)."""
        return not self.tiny

    @property
    def config(self) -> Any:
        """The model config (config.json only, no weights): head counts are known before loading."""
        if self._config is None:
            config = self.from_pretrained(AutoConfig)
            self._config = getattr(config, self.spec.sub_config, config) if self.spec.sub_config else config
        return self._config

    @property
    def processor(self) -> Any:
        """Tokenizer, feature extractor and chat template; left padding so every row ends at its last token."""
        if self._processor is None:
            if self.needs_extras():
                require_extras(self.spec)
            try:
                processor = self.from_pretrained(AutoProcessor)
            except ImportError as err:
                raise ConfigError(
                    f"cannot build the processor of {self.hub_id}: {err}".strip(),
                    self.spec.import_hint or f"install what it names (pip install 'calm[{self.family}]')",
                ) from err
            processor.tokenizer.padding_side = "left"
            self._processor = processor
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
            raise ConfigError(
                f"backbone.layers {outside} outside the model's {total} layers",
                f"use indices 0..{total - 1}, or null for all",
            )
        return self.layer_subset

    def hook_points(self) -> list[HookPoint]:
        layers = "|".join(str(i) for i in self.layer_indices) if self.layer_subset is not None else r"\d+"
        return [
            HookPoint(
                name,
                self.spec.layer_pattern.format(layers=layers),
                self.text_config.num_attention_heads,
                self.head_dim,
                LAST_TOKEN,
            )
            for name in self.hook_point_names
        ]

    @property
    def n_heads(self) -> int:
        return len(self.layer_indices) * self.text_config.num_attention_heads * len(self.hook_point_names)

    @property
    def head_dim(self) -> int:
        cfg = self.text_config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def head_names(self) -> list[str]:
        heads = self.text_config.num_attention_heads
        return [
            f"{point}.L{layer}.H{head}"
            for point in self.hook_point_names
            for layer in self.layer_indices
            for head in range(heads)
        ]

    @property
    def window_seconds(self) -> float | None:
        """The longest clip the processor keeps whole (longer ones are cut); None: no cap."""
        if self.spec.audio.window == "chunk_length":
            return float(self.processor.feature_extractor.chunk_length)
        if self.spec.audio.window == "max_audio_len":
            return float(self.processor.max_audio_len)
        return None

    def template(self) -> str:
        template = self.chat_template or self.processor.chat_template or self.processor.tokenizer.chat_template
        if not template:
            raise ConfigError(
                f"the processor of {self.hub_id} has no chat template",
                "set backbone.chat_template to the model's chat template",
            )
        return template

    prompt_media = "audio"  # the content item the clip is given as ("video" for a video whose audio is interleaved)

    def render_prompt(self, text: str) -> str:
        """The chat template applied to one user turn: the clip (`prompt_media`) first, then `text`, generation
        prompt added."""
        media = self.prompt_media
        conversation = [{"role": "user", "content": [{"type": media, media: "clip"}, {"type": "text", "text": text}]}]
        rendered = self.processor.apply_chat_template(
            conversation, chat_template=self.template(), add_generation_prompt=True, tokenize=False
        )
        return checked_rendering(rendered, getattr(self.processor, f"{media}_token"), text, media)

    def audio_key(self) -> dict[str, Any]:
        """The feature extractor's settings that change the numbers, and how clips are padded."""
        features = getattr(self.processor, "feature_extractor", None) or self.processor.audio_processor
        return {
            **preprocessing_key(self.sample_rate),
            **{name: getattr(features, name) for name in FEATURE_FIELDS if hasattr(features, name)},
            "pad": self.spec.audio.padding,
        }

    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        return {
            **self.weights_key(digests),
            "hook_points": [[p.name, p.pattern, p.reduce] for p in self.hook_points()],
            "position": "last_real_token",
            "prompt_format": {
                "chat_template_sha256": text_sha256(self.template(), 16),
                "rendered": self.render_prompt(PROMPT_PLACEHOLDER),
            },
            "audio": self.audio_key(),
        } | (
            {"compiled_blocks": "torch.compile(dynamic=True): LM norms and MLPs, audio-encoder layers"}
            if self.compile_blocks
            else {}
        )

    def weights_dtype(self) -> torch.dtype:
        return precision_dtype(self.precision)

    def load(self) -> nn.Module:
        return self.attach(self.from_pretrained(self.spec.model_cls(), config=self.config, dtype=self.weights_dtype()))

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
        expected = getattr(self.config, "audio_token_id", None)
        if expected is not None and processor.audio_token_id != expected:
            raise ConfigError(
                f"the tokenizer's {processor.audio_token} is id {processor.audio_token_id}, "
                f"the model expects {expected}",
                "use the processor saved with these weights",
            )
        self.compile_if_asked()
        return self.model

    def compile_if_asked(self) -> None:
        """`compile_blocks=true`: compile the loaded model's norms and MLPs between the hooked modules."""
        if self.compile_blocks:
            compile_hook_free_blocks(self.model, [path for _, path, _ in self._capture.modules])

    def collate(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """The processor's batch (left padded), the index of each row's last real token, and, for 1-D RoPE
        families, position ids that count real tokens only, so padding never shifts a row's positions."""
        batch = self.processed(waves, prompts)
        mask = batch["attention_mask"]
        if self.spec.position_ids:
            batch["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
        batch["last_index"] = (torch.arange(mask.shape[1]) * mask).argmax(-1)
        return batch

    def processed(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """The processor's model inputs for the rendered prompts and their clips (left padded)."""
        texts = [self.render_prompt(prompt) for prompt in prompts]
        if self.spec.audio.per_clip_features:
            parts = [self._process([text], [wave]) for text, wave in zip(texts, waves, strict=True)]
            return padded_batch(parts, self.processor.tokenizer.pad_token_id)
        return self._process(texts, list(waves))

    def _process(self, texts: list[str], waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        inputs = self.processor(
            text=texts, audio=waves, sampling_rate=self.sample_rate, return_tensors="pt", **self.spec.call_kwargs
        )
        return {key: value for key, value in inputs.items() if key not in NOT_MODEL_INPUTS}

    def base_model(self) -> nn.Module:
        """The model without its LM head (the head is never computed)."""
        base = self.model.base_model
        if base is self.model:
            raise RuntimeError(f"{type(self.model).__name__} has no inner base model to run without its LM head")
        return base

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One forward pass of the base model (audio tower + language model)."""
        assert self.model is not None and self._capture is not None, "call load() first"
        self._capture.set_positions(last_index=batch["last_index"])
        inputs = {key: value for key, value in batch.items() if key != "last_index"}
        with self._capture.capturing():
            self.base_model()(**inputs, use_cache=False)
        return self._capture.stacked()

    def generation_waves(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """The clips as `generate` gets them (a family may need to pad very short ones)."""
        return list(waves)

    @torch.no_grad()
    def generate_texts(
        self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int, options: dict[str, Any]
    ) -> list[str]:
        """Answers to the chat-template prompts (greedy or sampled, per `options`); only new tokens decoded."""
        assert self.model is not None, "call load() first"
        batch = self.collate(self.generation_waves(waves), prompts)
        dtype = next(self.model.parameters()).dtype
        inputs = {
            key: value.to(self.model.device, dtype) if value.is_floating_point() else value.to(self.model.device)
            for key, value in batch.items()
            if key not in ("last_index", "position_ids")
        }
        tokens = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **options)
        new = tokens[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(new, skip_special_tokens=True)]
