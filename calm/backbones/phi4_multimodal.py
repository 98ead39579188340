"""Phi-4-multimodal (Microsoft): a conformer speech encoder and a Phi-3-style language model
(`model.layers.N.self_attn.o_proj`). Its own, besides its description: the speech
LoRA adapter (`speech-lora` in the checkpoint), which its speech path is trained with and which needs
`peft` (pip install 'calm[phi4_multimodal]'); the tiny random copy has none."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from calm.backbones.audio_lm import WHOLE_CLIP, AudioLMBackbone, Family, require_extras
from calm.errors import ConfigError
from calm.storage.file_digests import FileDigests

SPEECH_ADAPTER = "speech-lora"

PHI4_MULTIMODAL = Family(
    name="phi4_multimodal",
    model_class="Phi4MultimodalForCausalLM",
    hub_id="microsoft/Phi-4-multimodal-instruct",
    license="MIT",
    audio=WHOLE_CLIP,
    extras=("peft",),
    layer_pattern=r"^model\.layers\.({layers})\.self_attn\.o_proj$",
    call_kwargs={"padding": True},
)


class Phi4MultimodalBackbone(AudioLMBackbone):
    """Phi-4-multimodal (or its tiny random copy: `tiny_model`), with its speech LoRA adapter on by default."""

    spec = PHI4_MULTIMODAL

    def __init__(self, *, speech_lora: bool = True, **settings: Any) -> None:
        """`settings`: AudioLMBackbone's (name, hub_id, path, tiny_model, ...)."""
        super().__init__(**settings)
        if speech_lora and self.tiny:
            raise ConfigError("backbone.speech_lora=true with a tiny random model", "set backbone.speech_lora=false")
        self.speech_lora = bool(speech_lora)

    def needs_extras(self) -> bool:
        """peft is needed for the speech adapter only."""
        return self.speech_lora

    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        return {**super().key_fields(digests), "adapter": SPEECH_ADAPTER if self.speech_lora else None}

    def load(self) -> nn.Module:
        """The weights, then (by default) the speech LoRA adapter from the checkpoint's `speech-lora` folder;
        the hooks go on after it, on the adapted `o_proj` modules."""
        model = self.from_pretrained(self.spec.model_cls(), config=self.config, dtype=self.weights_dtype())
        if self.needs_extras():
            require_extras(self.spec)
            model.load_adapter(
                self.source, adapter_name="speech", revision=self.revision, adapter_kwargs={"subfolder": SPEECH_ADAPTER}
            )
            model.set_adapter("speech")
        return self.attach(model)

    def _process(self, texts: list[str], waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The processor's outputs, with the audio frame mask it leaves out when nothing is padded."""
        inputs = super()._process(texts, waves)
        if "audio_attention_mask" not in inputs:
            inputs["audio_attention_mask"] = torch.ones(inputs["audio_input_features"].shape[:2], dtype=torch.bool)
        return inputs

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token and speech embeddings clip by clip, each clip's audio cut to its own frames (the conformer's
        convolutions would otherwise see the batch's padding), then one batched LM pass."""
        assert self.model is not None and self._capture is not None, "call load() first"
        base = self.base_model()
        ids, features, frames = batch["input_ids"], batch["audio_input_features"], batch["audio_attention_mask"]
        rows = []
        for row in range(ids.shape[0]):
            own = int(frames[row].sum())
            rows.append(
                base.embed_tokens_extend(
                    ids[row : row + 1],
                    base.embed_tokens(ids[row : row + 1]),
                    audio_input_features=features[row : row + 1, :own],
                    audio_embed_sizes=batch["audio_embed_sizes"][row : row + 1],
                    audio_attention_mask=frames[row : row + 1, :own],
                )
            )
        self._capture.set_positions(last_index=batch["last_index"])
        with self._capture.capturing():
            base(
                inputs_embeds=torch.cat(rows),
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                use_cache=False,
            )
        return self._capture.stacked()
