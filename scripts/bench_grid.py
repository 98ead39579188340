"""Speed of the paper's CALM grid with shared work (calm.grid) against evaluating settings from scratch.

On an ESC-50-sized split (50 classes, 1,600 support and 400 test clips, 1,024 heads x 128 dims,
class-structured random features) it times `evaluate_grid` over the whole paper grid (4 x 12 x 9 x 8
x 6 = 20,736 settings), then `CALM(...).fit(...).predict(...)` for a random sample of settings,
checks that those give the grid's accuracies exactly, and extrapolates the sample to the full grid.
Both timings come from this process; the ratio is what to read.

    python scripts/bench_grid.py            # full size
    python scripts/bench_grid.py --cv       # also time the cross-validated selection on the support set
    python scripts/bench_grid.py --quick    # small sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from calm.methods.metrics import accuracy
from calm.selection import CalmGrid, evaluate_grid, select_by_cross_validation
from calm.testing.synthetic import synthetic_split

# the grid's one home is the config: the generic CALM grid of protocol=paper
PAPER_GRID = CalmGrid.from_config(
    yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/grids/generic.yaml").read_text())["calm"]
)

FULL = dict(heads=1024, dim=128, classes=50, support_per_class=32, query_per_class=8, samples=20)
QUICK = dict(heads=32, dim=16, classes=10, support_per_class=4, query_per_class=4, samples=5)


def _explained_by_ties(scores: torch.Tensor, n_heads: int, estimator_accuracy: float, grid_accuracy: float) -> bool:
    """Whether an accuracy difference fits within near-tied queries: those whose best two class scores
    differ by less than the worst-case rounding of a float32 sum over the heads, where the order of
    summation (the estimator's matrix-vector product against the grid's batched product) decides."""
    bound = torch.finfo(torch.float32).eps * n_heads * float(scores.abs().max())
    top2 = scores.topk(2, dim=1).values
    near = int(((top2[:, 0] - top2[:, 1]) <= bound).sum())
    changed = round(abs(estimator_accuracy - grid_accuracy) * scores.shape[0] / 100)
    return changed <= near


def main(argv: Sequence[str] | None = None) -> dict[str, float | int | bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    for name in FULL:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--cv", action="store_true", help="also time select_by_cross_validation (5 folds)")
    parser.add_argument("--signal", type=float, default=None, help="class signal strength (default 0.05; quick 0.3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = {name: getattr(args, name) or default for name, default in (QUICK if args.quick else FULL).items()}
    split = synthetic_split(
        sizes["heads"],
        sizes["dim"],
        sizes["classes"],
        sizes["support_per_class"],
        sizes["query_per_class"],
        signal=args.signal or (0.3 if args.quick else 0.05),
        seed=args.seed,
    )
    n_settings = len(PAPER_GRID)

    started = time.perf_counter()
    result = evaluate_grid(split.support, split.labels, split.query, split.query_labels, PAPER_GRID)
    grid_seconds = time.perf_counter() - started

    sample = random.Random(args.seed).sample(range(n_settings), sizes["samples"])
    scratch_seconds, agree, within_ties = [], 0, 0
    for i in sample:
        started = time.perf_counter()
        scores = result.settings[i].estimator().fit(split.support, split.labels).predict_scores(split.query)
        pred = scores.argmax(dim=1)
        scratch_seconds.append(time.perf_counter() - started)
        if accuracy(pred, split.query_labels) == result.accuracy[i]:
            agree += 1
        else:
            within_ties += _explained_by_ties(
                scores, sizes["heads"], accuracy(pred, split.query_labels), result.accuracy[i]
            )
    per_setting = sum(scratch_seconds) / len(scratch_seconds)
    extrapolated = per_setting * n_settings
    out: dict[str, float | int | bool] = {
        "settings": n_settings,
        "grid_seconds": grid_seconds,
        "scratch_seconds_per_setting": per_setting,
        "scratch_seconds_extrapolated": extrapolated,
        "ratio": extrapolated / grid_seconds,
        "sampled": len(sample),
        "agree": agree,
        "within_float32_ties": within_ties,
        "best_accuracy": float(result.accuracy.max()),
    }

    print(
        f"split: {sizes['heads']} heads x {sizes['dim']} dims, {split.n_classes} classes, "
        f"{len(split.labels)} support and {len(split.query_labels)} test clips; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"paper grid, shared work:  {n_settings} settings in {grid_seconds:.1f} s "
        f"({1e3 * grid_seconds / n_settings:.2f} ms per setting)"
    )
    print(
        f"from scratch (CALM fit+predict): {per_setting:.3f} s per setting over {len(sample)} sampled settings "
        f"-> {extrapolated:.0f} s ({extrapolated / 3600:.2f} h) for the grid"
    )
    unexplained = len(sample) - agree - within_ties
    print(
        f"ratio: {out['ratio']:.0f}x; sampled settings agree with the grid: "
        f"{'yes' if agree == len(sample) else 'exactly'} ({agree}/{len(sample)})"
        + (
            f"; {within_ties} differ only on queries whose top two CALM scores are closer than float32 summation error"
            if within_ties
            else ""
        )
        + (f"; {unexplained} DISAGREE" if unexplained else "")
    )
    print(
        f"test accuracy over the grid: {result.accuracy.min():.2f} to {out['best_accuracy']:.2f} % (the best "
        "is the oracle)"
    )
    if args.cv:
        started = time.perf_counter()
        choice = select_by_cross_validation(split.support, split.labels, PAPER_GRID, folds=5)
        out["cv_seconds"] = time.perf_counter() - started
        out["cv_test_accuracy"] = float(result.accuracy[choice["setting_index"]])
        print(
            f"cross-validated selection on the support set ({choice['folds']} folds): {out['cv_seconds']:.1f} s; "
            f"cv accuracy {choice['cv_score']:.2f} %, its test accuracy {out['cv_test_accuracy']:.2f} %"
        )
    return out


if __name__ == "__main__":
    main()
