"""One job's head figures (PNG): where CALM's per-class weights sit on the layers × heads grid,
which heads each class relies on most, and how often SAV selected each head across episodes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from calm.figures.heads import HeadCollector, HeadGrid, top_heads
from calm.storage.atomic_write import write_bytes_atomic

CLASSES_PER_PAGE = 10
# Classes drawn per method in the class-weight pages and the top-heads figure: VGGSound (309) or
# AudioSet (527) would otherwise give dozens of pages and a top-heads figure metres tall, per job.
MAX_CLASSES = 40
TOP_HEADS = 5
DPI = 110
COLORMAP = "viridis"


def plain(text: str) -> str:
    """Text shown as written: a '$' in a class name would otherwise start matplotlib's math mode."""
    return str(text).replace("$", r"\$")


def _ticks(axis_len: int, labels: Sequence[int]) -> tuple[list[int], list[str]]:
    """At most about eight evenly spaced ticks, labelled with the real layer or head numbers."""
    step = max(1, math.ceil(axis_len / 8))
    positions = list(range(0, axis_len, step))
    return positions, [str(labels[i]) for i in positions]


def _cell_inches(grid: HeadGrid) -> float:
    return min(0.3, 5.0 / max(grid.width), 5.0 / max(len(layers) for layers in grid.layers))


def _draw_panel(ax: Axes, grid: HeadGrid, p: int, values: np.ndarray, vmax: float) -> AxesImage:
    image = ax.imshow(values, cmap=COLORMAP, vmin=0.0, vmax=vmax, aspect="equal", interpolation="nearest")
    ax.set_yticks(*_ticks(values.shape[0], grid.layers[p]))
    ax.set_xticks(*_ticks(values.shape[1], list(range(grid.width[p]))))
    ax.tick_params(labelsize=7)
    return image


def heads_figure(grid: HeadGrid, rows: list[tuple[str, np.ndarray]], title: str, colorbar: str) -> Figure:
    """A figure with one row of panels (one per hook point) per (label, per-head values (K,)) pair."""
    cell = _cell_inches(grid)
    width = sum(w * cell + 0.9 for w in grid.width) + 1.2
    height = (max(len(layers) for layers in grid.layers) * cell + 0.5) * len(rows) + 0.9
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(rows), len(grid.points), squeeze=False, gridspec_kw={"width_ratios": list(grid.width)})
    vmax = max([float(np.nanmax(v)) for _, v in rows if np.isfinite(v).any()] + [1e-12])
    for r, (label, values) in enumerate(rows):
        for p, panel in enumerate(grid.panels(values)):
            image = _draw_panel(axes[r, p], grid, p, panel, vmax)
            if r == 0:
                axes[r, p].set_title(plain(grid.points[p]), fontsize=9)
            if p == 0:
                axes[r, p].set_ylabel(f"{plain(label)}\nlayer" if label else "layer", fontsize=8)
            if r == len(rows) - 1:
                axes[r, p].set_xlabel("head", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=min(0.8, 4.0 / height), label=colorbar)
    fig.suptitle(plain(title), fontsize=10)
    return fig


def short_head_name(grid: HeadGrid, j: int) -> str:
    """'L3.H2', prefixed by the hook point's initials ('dca' for decoder_cross_attn) when there are several."""
    layer, head = grid.layers[grid.point[j]][grid.row[j]], grid.col[j]
    if len(grid.points) == 1:
        return f"L{layer}.H{head}"
    initials = "".join(part[:1] for part in grid.points[grid.point[j]].split("_"))
    return f"{initials}.L{layer}.H{head}"


def shown_classes(class_episodes: np.ndarray, max_classes: int = MAX_CLASSES) -> list[int]:
    """The classes worth a figure, in class order: of those seen in some episode, the `max_classes`
    seen in the most episodes (their weights are the best estimated), ties to the lower class index."""
    seen = [c for c in range(len(class_episodes)) if class_episodes[c] > 0]
    return sorted(sorted(seen, key=lambda c: (-int(class_episodes[c]), c))[:max_classes])


def top_heads_figure(
    grid: HeadGrid,
    mean_weights: np.ndarray,
    class_names: Sequence[str],
    title: str,
    n: int = TOP_HEADS,
    classes: Sequence[int] | None = None,
) -> Figure:
    """Classes × rank: each cell names the class's n-th heaviest head, coloured by its mean weight.

    `classes` are the ones drawn (rows), by default every class with weights.
    """
    shown = (
        list(classes)
        if classes is not None
        else [c for c in range(mean_weights.shape[1]) if np.isfinite(mean_weights[:, c]).any()]
    )
    heads, values = top_heads(mean_weights[:, shown], n)
    fig = Figure(figsize=(1.3 * heads.shape[1] + 2.5, 0.32 * len(shown) + 1.3), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap=COLORMAP, vmin=0.0, aspect="auto", interpolation="nearest")
    bright = 0.6 * np.nanmax(values, initial=0.0)
    for i, row in enumerate(heads):
        for k, j in enumerate(row):
            ax.text(
                k,
                i,
                short_head_name(grid, int(j)),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if values[i, k] > bright else "white",
            )
    ax.set_yticks(range(len(shown)), [plain(class_names[c]) for c in shown], fontsize=7)
    ax.set_xticks(range(heads.shape[1]), [f"#{k + 1}" for k in range(heads.shape[1])], fontsize=8)
    ax.set_xlabel("rank of the head within the class")
    fig.colorbar(image, ax=ax, label="mean weight")
    fig.suptitle(plain(title), fontsize=10)
    return fig


def _save(fig: Figure, path: Path, title: str) -> Path:
    """Save as PNG, with the title also in the file's metadata (readable without decoding the image)."""
    return save_figure(fig, path, metadata={"Title": title})


def save_figure(fig: Figure, path: Path, **options: object) -> Path:
    """`fig.savefig` (format from the file's suffix) written with `write_bytes_atomic`: a reader never
    sees half an image."""
    image = io.BytesIO()
    fig.savefig(image, format=Path(path).suffix.lstrip(".") or "png", **options)
    return write_bytes_atomic(path, image.getvalue())


def write_job_figures(
    collector: HeadCollector,
    grid: HeadGrid,
    class_names: Sequence[str],
    out_dir: Path,
    context: str = "",
    max_classes: int = MAX_CLASSES,
) -> dict[str, Path]:
    """Write every figure the collected fits allow into `out_dir`; returns {W&B key: PNG path}.

    Per-class figures draw at most `max_classes` classes (`shown_classes`), and say so in the title.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f" · {context}" if context else ""
    figures: dict[str, Path] = {}
    for method in collector.weight_sums:
        weights = collector.mean_weights(method)
        seen = int(np.count_nonzero(collector.class_episodes[method]))
        shown = shown_classes(collector.class_episodes[method], max_classes)
        capped = f" · {len(shown)} of {seen} classes shown (most episodes)" if len(shown) < seen else ""
        pages = [shown[i : i + CLASSES_PER_PAGE] for i in range(0, len(shown), CLASSES_PER_PAGE)]
        for number, page in enumerate(pages, start=1):
            part = f" ({number}/{len(pages)})" if len(pages) > 1 else ""
            title = f"{method}: head weights per class, mean over episodes{part}{capped}{suffix}"
            fig = heads_figure(grid, [(f"class {class_names[c]}", weights[:, c]) for c in page], title, "weight")
            name = f"{method}_class_weights" + (f"_{number}" if len(pages) > 1 else "")
            figures[f"{method}/{name.removeprefix(method + '_')}"] = _save(fig, out_dir / f"{name}.png", title)
        title = f"{method}: heads each class relies on most{capped}{suffix}"
        fig = top_heads_figure(grid, weights, class_names, title, classes=shown)
        figures[f"{method}/top_heads"] = _save(fig, out_dir / f"{method}_top_heads.png", title)
    for method in collector.selection_counts:
        title = f"{method}: share of the {collector.episodes[method]} episodes selecting each head{suffix}"
        fig = heads_figure(grid, [("", collector.selection_rate(method))], title, "selection rate")
        figures[f"{method}/selection"] = _save(fig, out_dir / f"{method}_selection.png", title)
    return figures
