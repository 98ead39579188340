"""What every backbone provides: a cache key without loading weights, then load, collate and capture."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from calm.config.assets import assets_dir
from calm.errors import AssetError, ConfigError
from calm.storage.digests import text_sha256
from calm.storage.file_digests import FileDigests

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# Lightning precision -> the dtype weights are loaded in ("-mixed" keeps fp32 weights under autocast).
PRECISION_DTYPES = {
    "32": torch.float32,
    "32-true": torch.float32,
    "bf16-true": torch.bfloat16,
    "bf16-mixed": torch.float32,
    "16-true": torch.float16,
    "16-mixed": torch.float32,
}

AUTOCAST = {"bf16-mixed": "bf16", "16-mixed": "fp16"}
_PROCESS_DIGESTS = FileDigests(None)  # weight digests for callers that pass no store: this process only


def precision_dtype(precision: str) -> torch.dtype:
    """The weight dtype for a Lightning precision string; unknown strings load fp32."""
    return PRECISION_DTYPES.get(str(precision), torch.float32)


def activation_dtype(precision: str) -> torch.dtype:
    """The dtype the hooked head activations come out in: the weights' dtype, or the autocast dtype of a
    "-mixed" precision (what the cache key records as `dtype` and `autocast`); evaluate.dtype=model
    runs CALM's post-backbone arithmetic in it."""
    autocast = AUTOCAST.get(str(precision))
    if autocast is not None:
        return torch.bfloat16 if autocast == "bf16" else torch.float16
    return precision_dtype(precision)


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


def check_sampling(samples: int, temperature: float, top_p: float) -> None:
    """Settings sampled generation needs: a positive number of answers, temperature > 0, 0 < top_p <= 1."""
    if isinstance(samples, bool) or not isinstance(samples, Integral) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}", "set samples to e.g. 8")
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not temperature > 0:
        raise ConfigError(
            f"temperature must be a number > 0, got {temperature!r}",
            "set temperature to e.g. 1.0 (sampling needs a positive temperature)",
        )
    if isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}", "set top_p to e.g. 0.95, or 1.0 (off)")


@contextmanager
def seeded_generation(seed: int, device: torch.device) -> Iterator[None]:
    """Sample from `seed` on `device` (and the CPU), then put the global random state back as it was."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def model_files(folder: Path) -> list[Path]:
    """The files of a local model folder whose bytes can change the numbers: config.json, the weights,
    and every other top-level JSON (tokenizer, processor and generation configs) or tokenizer file."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix in WEIGHT_SUFFIXES + (".json", ".txt", ".model", ".tiktoken"))
    )


def weights_fingerprint(source: str, revision: str | None, digests: FileDigests | None = None) -> str:
    """Identify the weights: `hub:<id>@<revision>`, or for a local folder the content digest of its model
    files (names and SHA-256 of each), so a re-saved or fine-tuned checkpoint of the same size keys
    other rows. `digests` remembers each file's digest by path, size and mtime (pass the cache folder's
    store: a 16 GB checkpoint is then read once, not per run); without it they are remembered for this
    process only."""
    local = Path(source)
    if not local.is_dir():
        return f"hub:{source}@{revision or 'main'}"
    files = model_files(local)
    shas = (digests or _PROCESS_DIGESTS).of_many(files)
    listing = "".join(f"{path.name}\t{sha}\n" for path, sha in zip(files, shas, strict=True))
    return f"local:{text_sha256(listing, 32)}"


def fetch_error(hub_id: str, source: str, err: Exception) -> AssetError:
    """The message for weights that cannot be loaded (typically: no network and no local copy)."""
    return AssetError(
        f"cannot load the weights of {hub_id} from {source}: {type(err).__name__}: {err}",
        f"download {hub_id} where there is network and set backbone.path=/local/copy "
        "(or put it under $CALM_ASSETS); offline runs never reach the hub",
    )


def tiny_weights(path: str | None, tiny_model: str, seed: int) -> str:
    """`path`, where the tiny random model that `tiny_model` names is built on first use.

    `tiny_model` is the dotted name of an object with `ensure(dest, seed) -> Path` (test scaffolding:
    calm.testing.tiny_models); the backbone config names it, so the product never imports the builders.
    """
    if not path:
        raise ConfigError("backbone.tiny_model needs backbone.path", "set backbone.path to a folder to build it in")
    module, _, attribute = str(tiny_model).rpartition(".")
    try:
        model = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"backbone.tiny_model={tiny_model!r} cannot be imported ({type(err).__name__}: {err})",
            "name one of calm.testing.tiny_models (e.g. calm.testing.tiny_models.QWEN2_AUDIO), "
            "or set backbone.tiny_model=null for real weights",
        ) from err
    return str(model.ensure(Path(path).expanduser(), seed))


class Backbone(ABC):
    """A model whose attention heads are read; cheap to construct, `load()` does the heavy work.

    `Backbone.__init__` holds what every checkpoint-backed backbone is given: its name, the weights
    (`resolve_weights` of hub id, local path and assets name; or a tiny random model built at `path`),
    the revision and the Lightning precision. `weights_key` is the start of every cache key.
    """

    name: str
    family: str
    sample_rate: int
    uses_prompt_text: bool = True
    window_seconds: float | None = None

    def __init__(
        self,
        name: str,
        hub_id: str,
        path: str | None,
        assets_name: str | None,
        revision: str | None,
        precision: str,
        tiny_model: str | None = None,
        tiny_seed: int = 0,
    ) -> None:
        if tiny_model:
            path = tiny_weights(path, tiny_model, tiny_seed)
        self.name = name
        self.hub_id = hub_id
        self.revision = revision
        self.source = resolve_weights(hub_id, path, assets_name)
        self.tiny = bool(tiny_model)
        self.precision = str(precision)

    def weights_key(self, digests: FileDigests | None = None) -> dict[str, Any]:
        """The cache key's first fields, the same for every backbone: family, model, weights and dtypes."""
        return {
            "family": self.family,
            "model": self.hub_id,
            "weights": self.weights_id(digests),
            "dtype": str(precision_dtype(self.precision)),
            "autocast": AUTOCAST.get(self.precision),
        }

    @abstractmethod
    def key_fields(self, digests: FileDigests | None = None) -> dict[str, Any]:
        """Everything about the model and its inputs that changes the captured numbers; `digests`
        remembers the weight files' content digests (see `weights_fingerprint`)."""

    def weights_id(self, digests: FileDigests | None = None) -> str:
        """`weights_fingerprint` of this backbone's `source` and `revision`, worked out once per object
        (later calls, e.g. the pseudo-label answer store's key, reuse it without hashing again)."""
        known = getattr(self, "_weights_id", None)
        if known is None:
            known = self._weights_id = weights_fingerprint(self.source, self.revision, digests)
        return known

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

    def trim_for_capture(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The collated batch without what `capture` never reads; runs on the CPU before the batch is
        moved to the device, so that part is never copied there. Default: the batch unchanged."""
        return batch

    def generate_answers(self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy answers to the prompts, one per clip (the zero-shot baseline)."""
        return self.generate_texts(waves, prompts, max_new_tokens, {"do_sample": False})

    def sample_answers(
        self,
        waves: list[np.ndarray],
        prompts: list[str],
        seeds: list[int],
        samples: int = 8,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 32,
    ) -> list[list[str]]:
        """`samples` sampled answers per clip (pseudo-labelling).

        Each clip is generated alone from its own seed, and the global random state is restored
        afterwards, so a clip's answers depend on its seed only, not on the other clips of the call.
        """
        check_sampling(samples, temperature, top_p)
        options = {
            "do_sample": True,
            "temperature": float(temperature),
            "top_p": float(top_p),
            "num_return_sequences": int(samples),
        }
        model = getattr(self, "model", None)
        device = next(model.parameters()).device if model is not None else torch.device("cpu")
        answers = []
        for wave, prompt, seed in zip(waves, prompts, seeds, strict=True):
            with seeded_generation(int(seed), device):
                answers.append(self.generate_texts([wave], [prompt], max_new_tokens, options))
        return answers

    def generate_texts(
        self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int, options: dict[str, Any]
    ) -> list[str]:
        """Decoded new tokens of the model's `generate(**options)`, `num_return_sequences` per clip in clip
        order; only generative backbones have them."""
        raise ConfigError(
            f"backbone {self.name!r} cannot generate answers",
            "use a generative backbone (e.g. backbone=qwen2_audio) for method=zero_shot or method=pseudo_label",
        )

    def from_pretrained(self, loader: Any, **kwargs: Any) -> Any:
        """`loader.from_pretrained(self.source)`, failing fast (AssetError) when the hub cannot be reached.

        Needs `source`, `hub_id` and `revision` attributes; the reachability probe runs once.
        """
        if getattr(self, "_local_only", None) is None:
            self._local_only = not Path(self.source).is_dir() and hub_unreachable(self.source, self.revision)
        try:
            return loader.from_pretrained(
                self.source, revision=self.revision, local_files_only=self._local_only, **kwargs
            )
        except (OSError, ValueError) as err:
            raise fetch_error(self.hub_id, self.source, err) from err
