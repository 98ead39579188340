"""What every backbone provides: a cache key without loading weights, then load, collate and capture."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calm.assets import assets_dir
from calm.errors import AssetError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def resolve_weights(hub_id: str, path: str | None, assets_name: str | None) -> str:
    """A local folder when there is one (backbone.path, then $CALM_ASSETS/<name>), else the hub id."""
    if path:
        local = Path(path).expanduser()
        if not (local / "config.json").is_file():
            raise AssetError(
                f"backbone.path={local} does not hold a Hugging Face model (no config.json)",
                f"point backbone.path at a local copy of {hub_id} (e.g. from `huggingface-cli download {hub_id}`)",
            )
        return str(local)
    if assets_name and (assets_dir() / assets_name / "config.json").is_file():
        return str(assets_dir() / assets_name)
    return hub_id


def weights_fingerprint(source: str, revision: str | None) -> str:
    """Identify the weights cheaply: hub revision, or for a local folder its config and weight file sizes."""
    local = Path(source)
    if not local.is_dir():
        return f"hub:{source}@{revision or 'main'}"
    digest = hashlib.sha256((local / "config.json").read_bytes())
    for weight in sorted(p for p in local.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return f"local:{digest.hexdigest()[:16]}"


def fetch_error(hub_id: str, source: str, err: Exception) -> AssetError:
    """The message for weights that cannot be loaded (typically: no network and no local copy)."""
    return AssetError(
        f"cannot load the weights of {hub_id} from {source}: {type(err).__name__}: {err}",
        f"download {hub_id} where there is network and set backbone.path=/local/copy "
        "(or put it under $CALM_ASSETS); offline runs never reach the hub",
    )


class Backbone(ABC):
    """A model whose attention heads are read; cheap to construct, `load()` does the heavy work."""

    name: str
    sample_rate: int
    uses_prompt_text: bool = True
    window_seconds: float | None = None

    @abstractmethod
    def key_fields(self) -> dict[str, Any]:
        """Everything about the model and its inputs that changes the captured numbers."""

    @property
    @abstractmethod
    def n_heads(self) -> int: ...

    @property
    @abstractmethod
    def head_dim(self) -> int: ...

    @abstractmethod
    def head_names(self) -> list[str]: ...

    @abstractmethod
    def load(self) -> nn.Module:
        """Load weights and processor; return the module Lightning should place on the device."""

    @abstractmethod
    def collate(self, waves: list[np.ndarray], prompts: list[str]) -> dict[str, torch.Tensor]:
        """Turn decoded clips and their prompt texts into one padded model batch."""

    @abstractmethod
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run one forward pass and return (batch, heads, head_dim) float32 head outputs."""

    def key_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.key_fields(), sort_keys=True).encode()).hexdigest()
