"""Memory and time at the paper's scale, on a synthetic cache in the real on-disk format.

Writes a cache of N rows of Qwen2-Audio's shape (1,024 heads x 128, fp16: 256 KiB a row) with its
clip table, then measures, each in a fresh process (peak RSS of that process alone):

  (a) 100 episodes of 50-way 5-shot 5-query SAV + CALM, rows gathered per episode from the memory map;
  (b) the ASVspoof-shaped paper protocol: 2 classes, the authors' spoofing grid (margin_clamped, brier
      x 11 tau x 6 alpha x 10 tau_w x 8 top_k = 10,560 settings), support 5,000 rows, test = the rest,
      read in chunks; cross-validated choice, oracle and EER included;
  (c) planning a resumed extraction over N generated clips: audio headers read with none missing,
      and with 1 % of the clips new (never checked before);
  (v) the VGGSound-shaped paper protocol (own cache): 309 classes, 20-shot support (6,180 rows), a
      reliability set V of 20 clips per class (6,180 rows), 15,446 test rows, the VGGSound grid of
      configs/grids/vggsound.yaml (240 settings); cross-validated, [val] and oracle choices;
  (s) the AudioSet-shaped paper protocol (own cache): 527 labels, per-label question rows (5 support
      questions per label, 20,000 test clips of 1 to 4 labels: ~50,000 question rows scored per clip
      too), the AudioSet grid of configs/grids/audioset.yaml (80 settings);
  (w) the tuned baselines of method=ablations on (v)'s cache: SAV (top_k 20) and GRW (one point,
      reliabilities on V) through the generic sweep (`paper_sweep_report`): each fit takes the support
      (and V) rows whole, so this part's memory grows with them (the scored rows are streamed).

The support, test and V rows of (b), (v) and (s) are read from disk as lazy views, streamed by the grid
under `--memory-budget-mb` (evaluate.memory_budget_mb). `--scale` shrinks (v) and (s) (the row counts
are multiplied by it; (b) and (a) follow --rows).

    python scripts/bench_scale.py --rows 8000
    python scripts/bench_scale.py --rows 32000 --dir /big/disk/bench   # 8 GB of cache
    python scripts/bench_scale.py --parts v --scale 0.1                 # a tenth of VGGSound, ~0.7 GB
    python scripts/bench_scale.py --parts w --scale 0.05                # its baselines' sweep
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADS, HEAD_DIM, WAYS_A, SUPPORT_B = 1024, 128, 50, 5000
GRIDS = Path(__file__).resolve().parents[1] / "configs" / "grids"
# (v): classes, support and V clips per class, test rows; (s): labels, support questions per label, test clips
VGGSOUND = {"classes": 309, "shots": 20, "val_per_class": 20, "test": 15446}
AUDIOSET = {"labels": 527, "shots": 5, "test_clips": 20000}
SPOOF_GRID = {
    "reliability": ["margin_clamped", "brier"],
    "tau": [1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 0.5, 0.8, 1, 2, 5],
    "shrinkage": [0, 0.1, 0.3, 0.5, 0.7, 1],
    "tau_w": [0.1, 0.3, 0.5, 0.7, 1, 2, 3, 5, 7, 10],
    "top_k": [5, 10, 20, 40, 100, 300, 500, 1024],
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clip_ids(n: int) -> list[str]:
    return [f"clip{i:06d}" for i in range(n)]


def write_cache(folder: Path, rows: int, chunk: int = 500, labels: np.ndarray | None = None) -> float:
    """Class-structured rows (by default 50 classes, class c = row % 50; else `labels`, one class per
    row), written through ActivationCache."""
    from calm.cache import ActivationCache

    started = time.perf_counter()
    cache = ActivationCache.open_path(folder, {"bench": "scale", "heads": HEADS}, HEADS, HEAD_DIM)
    labels = np.arange(rows) % WAYS_A if labels is None else labels
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((int(labels.max()) + 1, HEADS, HEAD_DIM), dtype=np.float32)
    ids = clip_ids(rows)
    for start in range(len(cache), rows, chunk):
        part = np.arange(start, min(start + chunk, rows))
        noise = rng.standard_normal((len(part), HEADS, HEAD_DIM), dtype=np.float32) * 3.0
        cache.write([ids[i] for i in part], centers[labels[part]] * 0.3 + noise)
    return time.perf_counter() - started


def grid_config(name: str) -> dict:
    """The `calm` grid of configs/grids/<name>.yaml, its defaults list followed as Hydra does."""
    import yaml

    cfg = yaml.safe_load((GRIDS / f"{name}.yaml").read_text())
    merged: dict = {}
    for entry in cfg.get("defaults", []):
        merged.update(cfg.get("calm", {}) if entry == "_self_" else grid_config(entry))
    if "_self_" not in cfg.get("defaults", []):
        merged.update(cfg.get("calm", {}))
    return merged


def vggsound_layout(scale: float) -> dict:
    """Row labels of (v): support (shots per class), V (val_per_class per class), test, in that order."""
    classes = VGGSOUND["classes"]
    shots, val = (max(2, round(VGGSOUND[key] * scale)) for key in ("shots", "val_per_class"))
    test = max(classes, round(VGGSOUND["test"] * scale))
    sections = {
        "support": np.arange(classes * shots) % classes,
        "val": np.arange(classes * val) % classes,
        "test": np.arange(test) % classes,
    }
    return {"labels": np.concatenate(list(sections.values())), "sizes": {k: len(v) for k, v in sections.items()}}


def audioset_layout(scale: float) -> dict:
    """Question rows of (s): support questions (shots per label), then the test clips' questions (1 to 4
    labels a clip, consecutive rows), with the clip of each test question."""
    labels, rng = AUDIOSET["labels"], np.random.default_rng(1)
    shots = max(2, round(AUDIOSET["shots"] * min(1.0, scale * 4)))
    support = np.arange(labels * shots) % labels
    clips = max(labels, round(AUDIOSET["test_clips"] * scale))
    per_clip = 1 + np.arange(clips) % 4
    test = np.concatenate([rng.choice(labels, n, replace=False) for n in per_clip])
    return {
        "labels": np.concatenate([support, test]),
        "groups": np.repeat(np.arange(clips), per_clip),
        "sizes": {"support": len(support), "test": len(test), "test_clips": clips},
    }


def layout(part: str, scale: float) -> dict:
    return vggsound_layout(scale) if part == "v" else audioset_layout(scale)


def part_a(folder: Path, rows: int, budget: int) -> dict:
    """100 episodes of 50-way 5-shot 5-query, SAV and CALM, rows read per episode."""
    import torch

    from calm.cache import ActivationCache
    from calm.methods import CALM, SAV
    from calm.protocols import EpisodicProtocol, Pools
    from calm.reports.episodic import evaluate
    from calm.run.tracking import NullTracker

    torch.set_num_threads(2)
    cache = ActivationCache.open_path(folder, {"bench": "scale", "heads": HEADS}, HEADS, HEAD_DIM)
    labels = np.arange(rows) % WAYS_A
    test = (np.arange(rows) // WAYS_A) % 2 == 1
    pools = Pools.build(labels, ~test, test, [f"c{c}" for c in range(WAYS_A)])
    episodes = EpisodicProtocol(shots=5, queries=5, episodes=100, seed=0, dataset="bench", ways=WAYS_A).episodes(pools)
    started = time.perf_counter()
    per_method, _ = evaluate(episodes, cache.rows(clip_ids(rows)), {"sav": SAV(), "calm": CALM()}, NullTracker())
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "sav_accuracy": float(np.mean(per_method["sav"])),
        "calm_accuracy": float(np.mean(per_method["calm"])),
    }


def part_b(folder: Path, rows: int, budget: int) -> dict:
    """The spoofing-shaped paper protocol: 2 classes, 10,560 settings, support 5,000, test the rest."""
    import torch

    from calm.cache import ActivationCache
    from calm.selection import CalmGrid, paper_grid_report

    torch.set_num_threads(2)
    cache = ActivationCache.open_path(folder, {"bench": "scale", "heads": HEADS}, HEADS, HEAD_DIM)
    view = cache.rows(clip_ids(rows))
    labels = (np.arange(rows) % WAYS_A) % 2  # two classes of 25 synthetic centres each
    grid = CalmGrid.from_config(SPOOF_GRID)
    support = SUPPORT_B if rows > SUPPORT_B + 1000 else rows // 2  # 5,000; half the rows in a small trial run
    started = time.perf_counter()
    report = paper_grid_report(
        view.subset(np.arange(support)),
        labels[:support],
        view.subset(np.arange(support, rows)),
        labels[support:],
        grid,
        positive_class=1,
        n_classes=2,
        memory_budget=budget,
    )
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "settings": len(grid),
        "support_rows": support,
        "test_rows": rows - support,
        "oracle_accuracy": report.oracle["test"]["accuracy"],
        "cv_accuracy": report.cv_choice["test"]["accuracy"],
    }


def part_c(folder: Path, rows: int, budget: int) -> dict:
    """Planning a resumed extraction: headers read with none missing, and with 1 % new clips."""
    import soundfile as sf

    import calm.extraction.plan as plan
    from calm.cache.durations import DurationStore
    from calm.data.table import Clip, ClipTable

    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    wave = np.zeros(800, dtype=np.float32)
    clips = []
    for i, cid in enumerate(clip_ids(rows)):
        path = audio / f"{cid}.wav"
        if not path.exists():
            sf.write(path, wave, 16000, subtype="PCM_16")
        clips.append(Clip(cid, path, i % 2, "train" if i % 2 else "test"))
    table = ClipTable("bench", tuple(clips), ("a", "b"))
    reads = {"n": 0}
    real_probe = plan.probe_audio

    def counting_probe(*args, **kwargs):
        reads["n"] += 1
        return real_probe(*args, **kwargs)

    plan.probe_audio = counting_probe
    shutil.rmtree(folder / "durations", ignore_errors=True)  # the first run starts with nothing remembered
    store = DurationStore(folder / "durations")
    first_ids = table.ids[: rows - rows // 100]
    started = time.perf_counter()
    plan.preflight(table, first_ids, "error", store)  # the first run: every clip checked once
    first = (reads["n"], time.perf_counter() - started)
    reads["n"] = 0
    started = time.perf_counter()
    plan.preflight(table, first_ids, "error", store)  # resumed, nothing new
    resumed = (reads["n"], time.perf_counter() - started)
    reads["n"] = 0
    started = time.perf_counter()
    durations, _, _ = plan.preflight(table, table.ids, "error", store)  # 1 % of the clips are new
    widened = (reads["n"], time.perf_counter() - started)
    plan.plan_batches(table.ids, durations, 16)
    return {
        "clips": rows,
        "first_run": {"headers_read": first[0], "seconds": first[1]},
        "resumed_none_missing": {"headers_read": resumed[0], "seconds": resumed[1]},
        "one_percent_new": {"new_clips": rows // 100, "headers_read": widened[0], "seconds": widened[1]},
        "peak_rss_mb": peak_rss_mb(),
    }


def _shaped_run(
    folder: Path, shape: dict, grid_name: str, n_classes: int, budget: int, **split: np.ndarray
) -> tuple[dict, object]:
    """The paper grid over a shaped cache: the rows of each split read from `folder`, timed, with peak RSS."""
    import torch

    from calm.cache import ActivationCache
    from calm.selection import CalmGrid, paper_grid_report

    torch.set_num_threads(2)
    labels = shape["labels"]
    view = ActivationCache.open_path(folder, {"bench": "scale", "heads": HEADS}, HEADS, HEAD_DIM).rows(
        clip_ids(len(labels))
    )
    support, test, val = split["support"], split["test"], split.get("val")
    grid = CalmGrid.from_config(grid_config(grid_name))
    extra = {"reliability": (view.subset(val), labels[val])} if val is not None else {"query_groups": shape["groups"]}
    started = time.perf_counter()
    report = paper_grid_report(
        view.subset(support),
        labels[support],
        view.subset(test),
        labels[test],
        grid,
        n_classes=n_classes,
        memory_budget=budget,
        **extra,
    )
    timing = {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "settings": len(grid)}
    return timing, report


def part_v(folder: Path, scale: float, budget: int) -> dict:
    """The VGGSound-shaped paper protocol: 309 classes, support, a large V and the test rows on disk."""
    shape = vggsound_layout(scale)
    sizes = shape["sizes"]
    edges = np.cumsum([0, sizes["support"], sizes["val"], sizes["test"]])
    support, val, test = (np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True))
    timing, report = _shaped_run(
        folder, shape, "vggsound", VGGSOUND["classes"], budget, support=support, val=val, test=test
    )
    return {
        **timing,
        **{f"{k}_rows": v for k, v in sizes.items()},
        "oracle_accuracy": report.oracle["test"]["accuracy"],
        "val_accuracy": report.val_choice["test"]["accuracy"],
        "cv_accuracy": report.cv_choice["test"]["accuracy"],
    }


def part_s(folder: Path, scale: float, budget: int) -> dict:
    """The AudioSet-shaped paper protocol: 527 labels, one row per (clip, positive label) question."""
    shape = audioset_layout(scale)
    sizes = shape["sizes"]
    support, test = np.arange(sizes["support"]), np.arange(sizes["support"], len(shape["labels"]))
    timing, report = _shaped_run(folder, shape, "audioset", AUDIOSET["labels"], budget, support=support, test=test)
    return {
        **timing,
        **{f"{k}_rows" if k != "test_clips" else k: v for k, v in sizes.items()},
        "oracle": report.oracle["test"],
        "cv": report.cv_choice["test"],
    }


def part_w(folder: Path, scale: float, budget: int) -> dict:
    """The tuned baselines on the VGGSound-shaped rows: SAV and GRW, fitted on fp16 support (and V) rows."""
    import torch

    from calm.cache import ActivationCache
    from calm.methods import GRW, SAV
    from calm.selection import SweepPoint, paper_sweep_report

    torch.set_num_threads(2)
    shape = vggsound_layout(scale)
    labels, sizes = shape["labels"], shape["sizes"]
    view = ActivationCache.open_path(folder, {"bench": "scale", "heads": HEADS}, HEADS, HEAD_DIM).rows(
        clip_ids(len(labels))
    )
    edges = np.cumsum([0, sizes["support"], sizes["val"], sizes["test"]])
    support, val, test = (np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True))
    fp16 = {name: view.gather(torch.tensor(rows), torch.float16) for name, rows in (("support", support), ("val", val))}
    out: dict = {f"{k}_rows": v for k, v in sizes.items()}
    for name, make, point in (
        ("sav", SAV, SweepPoint((("top_k", 20),))),
        ("grw", GRW, SweepPoint((("tau", 0.03), ("tau_w", 0.5), ("top_k", 20)))),
    ):
        started = time.perf_counter()
        report = paper_sweep_report(
            lambda values, make=make: make(**values),
            [point],
            fp16["support"],
            labels[support],
            view.subset(test),
            labels[test],
            n_classes=VGGSOUND["classes"],
            reliability=(fp16["val"], labels[val]),
            memory_budget=budget,
        )
        out[name] = {
            "seconds": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(),
            "accuracy": report.oracle["test"]["accuracy"],
        }
    return out


PARTS = {"a": part_a, "b": part_b, "c": part_c}
SHAPED = {"v": part_v, "s": part_s, "w": part_w}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--dir", type=Path, default=Path("bench_scale"), help="where the synthetic cache goes")
    parser.add_argument(
        "--parts", default="abc", help="any of a, b, c, v (VGGSound-shaped), s (AudioSet-shaped), w (v's baselines)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="row counts of (v) and (s) times this")
    parser.add_argument("--memory-budget-mb", type=int, default=128, help="evaluate.memory_budget_mb of the grids")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # run one part in this process (internal)
    args = parser.parse_args()
    budget = args.memory_budget_mb * 2**20
    folders = {name: args.dir / f"{'v' if name == 'w' else name}_scale{args.scale:g}" for name in SHAPED}
    if args.part:
        out = (
            SHAPED[args.part](folders[args.part], args.scale, budget)
            if args.part in SHAPED
            else PARTS[args.part](args.dir / f"rows{args.rows}", args.rows, budget)
        )
        print(json.dumps(out))
        return
    report = {"rows": args.rows, "cache_gb": args.rows * HEADS * HEAD_DIM * 2 / 1e9}
    if set(args.parts) & {"a", "b"}:
        report["write_seconds"] = write_cache(args.dir / f"rows{args.rows}", args.rows)
    for name in args.parts:
        if name in SHAPED:
            labels = layout("v" if name == "w" else name, args.scale)["labels"]
            report[name] = {
                "rows": len(labels),
                "cache_gb": len(labels) * HEADS * HEAD_DIM * 2 / 1e9,
                "write_seconds": write_cache(folders[name], len(labels), labels=labels),
            }
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--rows",
                str(args.rows),
                "--dir",
                str(args.dir),
                "--scale",
                str(args.scale),
                "--memory-budget-mb",
                str(args.memory_budget_mb),
                "--part",
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report[name] = {**report.get(name, {}), **json.loads(out.stdout.strip().splitlines()[-1])}
        print(f"({name}) {json.dumps(report[name])}", flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
