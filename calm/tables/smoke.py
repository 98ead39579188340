"""The smoke table's inputs: generated tones for its `table_smoke` row group (the tiny backbone needs
no download and the data none either), and the overrides that keep its data, cache and finished-job
records inside the output folder. Its other row group has no data on purpose, so both a filled and
a "no data" group go through the whole table pipeline (`configs/tables/smoke.yaml`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SMOKE_TABLE = "smoke"
SMOKE_GROUP = "table_smoke"
SMOKE_CLASSES = ("low", "mid", "high", "chirp")


def write_smoke_data(root: Path, clips_per_class: int = 6, seconds: float = 1.0, rate: int = 16000) -> Path:
    """Generated tones, one folder per class (the `folder` dataset layout); each class a different pitch."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for index, name in enumerate(SMOKE_CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for clip in range(clips_per_class):
            base = 220.0 * 2 ** index
            pitch = base * (1 + 2 * t) if name == "chirp" else np.full_like(t, base * (1 + 0.02 * clip))
            wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / rate) + 0.02 * rng.standard_normal(len(t))
            sf.write(root / name / f"{name}_{clip}.wav", wave.astype(np.float32), rate)
    return root


def smoke_overrides(out_dir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Write the tones under `out_dir` and return (overrides for every job, per-group overrides)."""
    out_dir = Path(out_dir)
    data = write_smoke_data(out_dir / "smoke_data" / "tones")
    overrides = [f"paths.data_dir={out_dir / 'data'}", f"paths.cache_dir={out_dir / 'cache'}",
                 f"paths.finished_dir={out_dir / 'finished'}"]
    return overrides, {SMOKE_GROUP: [f"dataset.root={data}"]}
