"""Figures that show what a run found: per job, the heads CALM weights and SAV selects; per sweep,
accuracy against shots. PNGs next to the results, and the same images in W&B."""

from calm.figures.heads import HeadCollector, HeadGrid, top_heads
from calm.figures.job import shown_classes, write_job_figures
from calm.figures.sweep import Curve, SweepFigures, accuracy_curves, read_sweep, write_sweep_figures

__all__ = [
    "Curve",
    "HeadCollector",
    "HeadGrid",
    "SweepFigures",
    "accuracy_curves",
    "read_sweep",
    "shown_classes",
    "top_heads",
    "write_job_figures",
    "write_sweep_figures",
]
