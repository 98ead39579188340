"""Cost of `method=auto` per episode, as a multiple of one CALM fit+predict in the same run.

On one episode shaped like Qwen2-Audio's cache (1,024 heads x 128 dims, 50-way 5-shot, 400 queries,
class-structured random features) it times the AutoSelect estimator of configs/estimator/auto.yaml
(its default candidates, composed as `method=auto` composes them) against CALM's default setting,
interleaved round-robin so machine load hits both alike. It also fits every candidate on every fold
from scratch through the estimator API (what the shared cosine products avoid), checks that this gives
auto's cross-validated accuracies, and reports that cost too. The ratios are what to read.

    python scripts/bench_auto.py            # full size
    python scripts/bench_auto.py --quick    # small sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import calm.config.authors_modes  # noqa: F401  (registers ${calm.authors:...}, which the estimator configs use)
from calm.config.builder import build
from calm.methods import CALM, Estimator
from calm.selection import AutoSelect
from calm.selection.auto import auto_folds
from calm.selection.cross_validation import fold_seed
from calm.testing.synthetic import synthetic_split
from calm.testing.timing import time_round_robin

REPO = Path(__file__).resolve().parents[1]
FULL = dict(heads=1024, dim=128, classes=50, shots=5, queries=400, repeats=5)
QUICK = dict(heads=64, dim=32, classes=10, shots=5, queries=50, repeats=2)
TARGET = 10.0


def configured_auto(overrides: Sequence[str] = ()) -> AutoSelect:
    """The `auto` estimator of `method=auto`, composed from configs/ with Hydra (its defaults list pulls
    each candidate's settings from configs/estimator/)."""
    os.environ.setdefault("CALM_ROOT", str(REPO))
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["method=auto", *overrides])
    return build(cfg.method.estimators.auto, "estimator", base=Estimator)


def from_scratch(
    auto: AutoSelect, support: torch.Tensor, labels: torch.Tensor, n_classes: int, tie_seed: int
) -> dict[str, float]:
    """Each candidate fitted on each fold's fit clips and asked for its held-out clips, through the
    estimator API: the pooled held-out accuracy per candidate, on auto's folds."""
    fold, n_folds, _ = auto_folds(
        labels.numpy(), n_classes, auto.folds, auto.leave_one_out_up_to, fold_seed(auto.cv_seed, tie_seed)
    )
    scores = {}
    for name, estimator in auto.candidates.items():
        correct = 0
        for f in range(n_folds):
            held = torch.from_numpy(fold == f)
            fitted = estimator.fit(support[~held], labels[~held], n_classes=n_classes, tie_seed=tie_seed)
            correct += int((fitted.predict(support[held]) == labels[held]).sum())
        scores[name] = 100.0 * correct / len(labels)
    return scores


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    for name in FULL:
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = {name: getattr(args, name) or default for name, default in (QUICK if args.quick else FULL).items()}
    ep = synthetic_split(
        sizes["heads"],
        sizes["dim"],
        sizes["classes"],
        sizes["shots"],
        sizes["queries"],
        balanced_queries=False,
        signal=0.2,
        seed=args.seed,
    )
    auto = configured_auto()
    tie_seed = args.seed

    def calm() -> torch.Tensor:
        return CALM().fit(ep.support, ep.labels, n_classes=ep.n_classes).predict(ep.query)

    def chosen() -> torch.Tensor:
        return auto.fit(ep.support, ep.labels, n_classes=ep.n_classes, tie_seed=tie_seed).predict(ep.query)

    timings = time_round_robin({"CALM": calm, "auto": chosen}, sizes["repeats"])
    start = time.perf_counter()
    scratch = from_scratch(auto, ep.support, ep.labels, ep.n_classes, tie_seed)
    scratch_seconds = time.perf_counter() - start + timings["CALM"]  # + the winner's refit and predict
    record = auto.selection_
    agree = all(np.isclose(scratch[name], record["cv_accuracy"][name]) for name in auto.candidates)
    ratio = timings["auto"] / timings["CALM"]
    accuracy = float((chosen() == ep.query_labels).float().mean() * 100)

    print(
        f"episode: {sizes['heads']} heads x {sizes['dim']} dims, {ep.n_classes}-way {sizes['shots']}-shot "
        f"(n={len(ep.labels)}), {len(ep.query_labels)} queries; torch threads {torch.get_num_threads()}; "
        f"median of {sizes['repeats']}"
    )
    print(
        f"auto: {len(auto.candidates)} candidates ({', '.join(auto.candidates)}), "
        f"{record['selected_by']} with {record['folds']} folds; chose {record['selected']} "
        f"(test accuracy {accuracy:.1f} %)"
    )
    print(f"CALM fit+predict {timings['CALM'] * 1e3:9.1f} ms")
    print(f"auto fit+predict {timings['auto'] * 1e3:9.1f} ms   ratio to CALM: {ratio:.2f}x (target <= {TARGET:g}x)")
    print(
        f"every candidate fitted per fold from scratch: {scratch_seconds * 1e3:9.1f} ms "
        f"({scratch_seconds / timings['CALM']:.2f}x CALM, {scratch_seconds / timings['auto']:.2f}x auto)"
    )
    print(f"cross-validated accuracies agree with the from-scratch fits: {'yes' if agree else 'NO'}")
    return {
        "calm_seconds": timings["CALM"],
        "auto_seconds": timings["auto"],
        "ratio": ratio,
        "scratch_seconds": scratch_seconds,
        "agree": agree,
        "selected": record["selected"],
        "selected_by": record["selected_by"],
        "folds": record["folds"],
        "accuracy": accuracy,
    }


if __name__ == "__main__":
    main()
