"""Head capture: forward pre-hooks on attention output projections, reduced inside the hook.

The input of `o_proj`/`out_proj` is the concatenation of per-head attention outputs, so reshaping
its last dimension to (heads, head_dim) gives each head's output. Reducing (last token, or mean
over real frames) inside the hook means full-sequence activations are never kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from calm.errors import ConfigError

LAST_TOKEN = "last_token"
MEAN_FRAMES = "mean_frames"


@dataclass(frozen=True)
class HookPoint:
    """A family of modules (one per layer) whose inputs hold per-head outputs, and how to reduce them."""

    name: str
    pattern: str
    n_heads: int
    head_dim: int
    reduce: str


def find_layer_modules(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    """Modules whose path matches `pattern` (with one group = layer index), ordered by layer.

    Walking `named_modules()` instead of hard-coding paths survives transformers moving modules around.
    """
    regex = re.compile(pattern)
    found = []
    for path, module in model.named_modules():
        match = regex.search(path)
        if match:
            found.append((int(match.group(1)), path, module))
    if not found:
        raise ConfigError(
            f"no module of {type(model).__name__} matches hook pattern {pattern!r}",
            "check the backbone's hook_points (module names differ between model families)",
        )
    found.sort(key=lambda item: item[0])
    return [(path, module) for _, path, module in found]


class HeadCapture:
    """Collects per-head outputs of every layer of the given hook points during one forward pass.

    Before each forward, call `set_positions` with the index of each row's last real token and/or
    a mask of real encoder frames; the hooks slice or average there.
    """

    def __init__(self, model: nn.Module, points: list[HookPoint]) -> None:
        self.points = points
        self.modules: list[tuple[HookPoint, str, nn.Module]] = [
            (point, path, module) for point in points for path, module in find_layer_modules(model, point.pattern)
        ]
        dims = {point.head_dim for point in points}
        if len(dims) != 1:
            raise ConfigError(
                f"hook points have different head sizes {sorted(dims)}", "capture one head size per cache"
            )
        self.head_dim = dims.pop()
        self._last_index: torch.Tensor | None = None
        self._frame_mask: torch.Tensor | None = None
        self._captured: dict[str, torch.Tensor] = {}

    @property
    def n_heads(self) -> int:
        return sum(point.n_heads for point, _, _ in self.modules)

    def head_names(self) -> list[str]:
        """Flat head order: hook point, then layer, then head (layer-major within a point)."""
        names = []
        for point, path, _ in self.modules:
            layer = re.search(point.pattern, path).group(1)
            names.extend(f"{point.name}.L{layer}.H{h}" for h in range(point.n_heads))
        return names

    def set_positions(self, last_index: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None) -> None:
        self._last_index = last_index
        self._frame_mask = frame_mask

    def _reduce(self, point: HookPoint, hidden: torch.Tensor) -> torch.Tensor:
        if point.reduce == LAST_TOKEN:
            if self._last_index is None:
                raise RuntimeError("HeadCapture.set_positions(last_index=...) was not called before forward")
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            return hidden[rows, self._last_index.to(hidden.device)]
        if point.reduce == MEAN_FRAMES:
            if self._frame_mask is None:
                raise RuntimeError("HeadCapture.set_positions(frame_mask=...) was not called before forward")
            mask = self._frame_mask.to(device=hidden.device, dtype=torch.float32)[..., : hidden.shape[1]]
            summed = torch.einsum("bt,btf->bf", mask, hidden.float())
            return summed / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        raise ConfigError(f"unknown reduction {point.reduce!r}", f"use {LAST_TOKEN!r} or {MEAN_FRAMES!r}")

    @contextmanager
    def capturing(self) -> Iterator[HeadCapture]:
        """Register the hooks for the duration of a forward pass, always removing them."""
        self._captured = {}
        handles = []
        for point, path, module in self.modules:

            def hook(_module: nn.Module, args: tuple, point: HookPoint = point, path: str = path) -> None:
                self._captured[path] = self._reduce(point, args[0]).float()

            handles.append(module.register_forward_pre_hook(hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def stacked(self) -> torch.Tensor:
        """(batch, heads, head_dim) in flat head order."""
        missing = [path for _, path, _ in self.modules if path not in self._captured]
        if missing:
            raise RuntimeError(f"hooks did not fire for {missing[:3]}: the forward pass skipped these layers")
        parts = [self._captured[path].reshape(-1, point.n_heads, point.head_dim) for point, path, _ in self.modules]
        return torch.cat(parts, dim=1)
