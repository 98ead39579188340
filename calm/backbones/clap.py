"""CLAP (LAION's contrastive audio-text encoder): no attention heads are read, the clip's projected audio
embedding is its one feature, a single "head" of shape (1, projection_dim). The nearest-prototype
estimators on that feature are the authors' CLAP nearest-centroid baseline (`clap_knn`), and the text
tower gives its text zero-shot (`clap_zero_shot`, calm.baselines.text_zero_shot).

Audio follows the checkpoint's feature extractor (48 kHz, 10 s window, repeat-padding of short clips,
its mel filters), with two rules that make a clip's embedding depend on that clip alone: a clip is cut
to its first `window_seconds` (the project's `on_long_clip=truncate`) instead of a random crop, and
`is_longer` is the clip's own flag, not the feature extractor's random pick of one clip per batch
(which would send a fused checkpoint's clip through its fusion branch depending on its batch mates).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import ClapConfig, ClapModel, ClapProcessor

from calm.backbones.base import Backbone, precision_dtype
from calm.data.audio import preprocessing_key
from calm.errors import ConfigError
from calm.storage.file_digests import FileDigests

HEAD_NAME = "audio_embedding"
FUSION = "fusion"


class ClapBackbone(Backbone):
    """A CLAP checkpoint (or a tiny random copy: `tiny_model`); `load()` reads the weights, nothing before it."""

    family = "clap"
    uses_prompt_text = False  # the audio tower reads no text: the prompt keys neither the cache nor a row
    listed_heads = "1 × projection_dim: one embedding, no heads"  # what `python -m calm.backbones ls` shows
    listed_window = "10 s at 48 kHz (from the feature extractor)"
    license = "Apache-2.0"

    def __init__(
        self,
        name: str = "clap",
        hub_id: str = "laion/clap-htsat-unfused",
        path: str | None = None,
        assets_name: str | None = "clap-htsat-unfused",
        revision: str | None = None,
        tiny_model: str | None = None,
        tiny_seed: int = 0,
        precision: str = "32-true",
    ) -> None:
        super().__init__(name, hub_id, path, assets_name, revision, precision, tiny_model, tiny_seed)
        self._config: ClapConfig | None = None
        self._processor: ClapProcessor | None = None
        self.model: ClapModel | None = None

    @property
    def config(self) -> ClapConfig:
        """The model config (config.json only, no weights): the embedding size is known before loading."""
        if self._config is None:
            self._config = self.from_pretrained(ClapConfig)
        return self._config

    @property
    def processor(self) -> ClapProcessor:
        """Feature extractor (mel settings, rate, window) and the text tower's tokenizer."""
        if self._processor is None:
            self._processor = self.from_pretrained(ClapProcessor)
            self._check_fusion()
        return self._processor

    def _check_fusion(self) -> None:
        """A fused checkpoint needs the four-channel mels of `truncation="fusion"`, an unfused one one channel."""
        fused = bool(self.config.audio_config.enable_fusion)
        truncation = self.processor.feature_extractor.truncation
        if fused != (truncation == FUSION):
            raise ConfigError(
                f"{self.hub_id}: the model has enable_fusion={fused} but its feature extractor "
                f"truncation={truncation!r}",
                "use the preprocessor_config.json shipped with these weights (fused checkpoints use "
                "truncation='fusion', unfused ones 'rand_trunc')",
            )

    @property
    def sample_rate(self) -> int:
        """The feature extractor's rate (48 kHz): clips are resampled to it with torchaudio when decoded."""
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def window_seconds(self) -> float:
        return float(self.processor.feature_extractor.max_length_s)

    @property
    def n_heads(self) -> int:
        return 1

    @property
    def head_dim(self) -> int:
        return int(self.config.projection_dim)

    def head_names(self) -> list[str]:
        return [HEAD_NAME]

    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        features = self.processor.feature_extractor
        return {
            **self.weights_key(digests),
            "feature": "get_audio_features (projected, L2-normalised)",
            "audio": {
                **preprocessing_key(self.sample_rate),
                "window_seconds": self.window_seconds,
                "cut": "first_window",
                "is_longer": "own_clip",
                "truncation": features.truncation,
                "padding": features.padding,
                "feature_size": features.feature_size,
                "hop_length": features.hop_length,
                "fft_window_size": features.fft_window_size,
                "frequency_min": features.frequency_min,
                "frequency_max": features.frequency_max,
                "top_db": features.top_db,
            },
        }

    def load(self) -> nn.Module:
        self._check_fusion()  # before the weights load
        self.model = self.from_pretrained(ClapModel, dtype=precision_dtype(self.precision)).eval()
        if self.model.config.projection_dim != self.head_dim:
            raise ConfigError(
                f"the loaded model projects to {self.model.config.projection_dim}, config says {self.head_dim}",
                "the weights do not match their config.json",
            )
        return self.model

    def collate(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Mels of each clip cut to the window; the prompt texts are not read."""
        features = self.processor.feature_extractor
        window = int(features.nb_max_samples)
        batch = features(
            [np.asarray(w[:window], dtype=np.float32) for w in waves],
            sampling_rate=self.sample_rate,
            return_tensors="pt",
        )
        # every clip is within the window now: none is "longer" (the extractor flags one at random)
        return {"input_features": batch.input_features, "is_longer": torch.zeros(len(waves), 1, dtype=torch.bool)}

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The projected, L2-normalised audio embeddings as (batch, 1, projection_dim) float32."""
        assert self.model is not None, "call load() first"
        dtype = next(self.model.parameters()).dtype
        out = self.model.get_audio_features(
            input_features=batch["input_features"].to(dtype), is_longer=batch["is_longer"]
        )
        return out.pooler_output.float()[:, None, :]

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """The text tower's projected, L2-normalised embeddings (len(texts), projection_dim), float32 on the CPU."""
        assert self.model is not None, "call load() first"
        device = next(self.model.parameters()).device
        tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        out = self.model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
        return out.pooler_output.float().cpu()
