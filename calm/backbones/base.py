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
from calm.errors import AssetError, ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# Lightning precision -> the dtype weights are loaded in ("-mixed" keeps fp32 weights under autocast).
PRECISION_DTYPES = {"32": torch.float32, "32-true": torch.float32, "bf16-true": torch.bfloat16,
                    "bf16-mixed": torch.float32, "16-true": torch.float16, "16-mixed": torch.float32}

AUTOCAST = {"bf16-mixed": "bf16", "16-mixed": "fp16"}


def precision_dtype(precision: str) -> torch.dtype:
    """The weight dtype for a Lightning precision string; unknown strings load fp32."""
    return PRECISION_DTYPES.get(str(precision), torch.float32)


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


def hub_unreachable(hub_id: str, revision: str | None = None, timeout: float = 10.0) -> bool:
    """One quick request to the hub for `hub_id`.

    Without network, `from_pretrained` retries every file for minutes before failing; when this says
    the hub cannot be reached, load with `local_files_only=True` instead: the local HF cache, or a
    clear error at once. Any answer from the hub (even 401/404) counts as reachable.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(hub_id, revision=revision, timeout=timeout)
    except HfHubHTTPError:
        return False
    except Exception:  # offline mode, DNS, refused, timed out: no answer (transport classes vary by version)
        return True
    return False


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

    def generate_answers(self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy answers to the prompts (the zero-shot baseline); only generative backbones have them."""
        raise ConfigError(
            f"backbone {self.name!r} cannot generate answers",
            "use a generative backbone (e.g. backbone=qwen2_audio) for method=zero_shot",
        )

    def from_pretrained(self, loader: Any, **kwargs: Any) -> Any:
        """`loader.from_pretrained(self.source)`, failing fast (AssetError) when the hub cannot be reached.

        Needs `source`, `hub_id` and `revision` attributes; the reachability probe runs once.
        """
        if getattr(self, "_local_only", None) is None:
            self._local_only = not Path(self.source).is_dir() and hub_unreachable(self.source, self.revision)
        try:
            return loader.from_pretrained(self.source, revision=self.revision, local_files_only=self._local_only,
                                          **kwargs)
        except (OSError, ValueError) as err:
            raise fetch_error(self.hub_id, self.source, err) from err

    def key_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.key_fields(), sort_keys=True).encode()).hexdigest()
