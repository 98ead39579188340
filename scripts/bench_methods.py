"""Speed of CALM and SAV fit+predict on one episode shaped like Qwen2-Audio's cache.

Compares each vectorised estimator with (1) a straightforward per-head Python loop computing the
same thing, checked to give the same predictions, and (2) a floor: one batched matrix product with
the FLOP count of the method's cosine products. All timings come from this process, interleaved
round-robin so machine load hits every variant alike; the ratios are what to read.

    python scripts/bench_methods.py            # 1,024 heads x 128, 50 classes, 5 shots, 400 queries
    python scripts/bench_methods.py --quick    # small sizes, for the smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch

from calm.methods import CALM, SAV
from calm.methods.calm_core import EPSILON, WEIGHT_SUM_FLOOR
from calm.methods.sav_core import sav_decide
from calm.testing.synthetic import SyntheticSplit, synthetic_split
from calm.testing.timing import time_round_robin

FULL = dict(heads=1024, dim=128, classes=50, shots=5, queries=400, repeats=7)
QUICK = dict(heads=64, dim=32, classes=10, shots=5, queries=50, repeats=2)


Episode = SyntheticSplit


def synthetic_episode(heads: int, dim: int, classes: int, shots: int, queries: int, seed: int = 0) -> Episode:
    """One episode: `shots` per class, `queries` query clips with random labels."""
    return synthetic_split(heads, dim, classes, shots, queries, balanced_queries=False, signal=0.2, seed=seed)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def calm_loop(ep: Episode, tau: float = 0.07, tau_w: float = 0.5) -> torch.Tensor:
    """CALM's default setting (margin_clamped, power weights) one head at a time."""
    one_hot = torch.nn.functional.one_hot(ep.labels, ep.n_classes).float()
    counts = one_hot.sum(0)
    clips = torch.arange(len(ep.labels))
    raw, query_posteriors = [], []
    for j in range(ep.support.shape[1]):
        a = ep.support[:, j, :]
        protos = normalize(one_hot.t() @ a / counts[:, None])
        p = torch.softmax(normalize(a) @ protos.t() / tau, dim=1)
        other = p.masked_fill(one_hot.bool(), -torch.inf).amax(dim=1)
        margin = (p[clips, ep.labels] - other).clamp_min(0.0)
        r = margin @ one_hot / counts
        raw.append((r + EPSILON) ** (1.0 / tau_w))
        query_posteriors.append(torch.softmax(normalize(ep.query[:, j, :]) @ protos.t() / tau, dim=1))
    raw_w = torch.stack(raw)
    total = raw_w.sum(0)
    weights = torch.where(total > WEIGHT_SUM_FLOOR, raw_w / total, torch.full_like(raw_w, 1 / len(raw)))
    scores = torch.zeros(ep.query.shape[0], ep.n_classes)
    for j, p in enumerate(query_posteriors):
        scores += weights[j] * p
    return scores.argmax(dim=1)


def sav_loop(ep: Episode, top_k: int = 20) -> torch.Tensor:
    """SAV one head at a time: per-head support accuracy, ranking, then the selected heads' votes."""
    one_hot = torch.nn.functional.one_hot(ep.labels, ep.n_classes).float()
    counts = one_hot.sum(0)
    head_scores, all_protos = [], []
    for j in range(ep.support.shape[1]):
        a = ep.support[:, j, :]
        protos = normalize(one_hot.t() @ a / counts[:, None])
        head_scores.append(int(((normalize(a) @ protos.t()).argmax(dim=1) == ep.labels).sum()))
        all_protos.append(protos)
    ranking = sorted(range(len(head_scores)), key=lambda j: (-head_scores[j], j))[:top_k]
    votes = [(normalize(ep.query[:, j, :]) @ all_protos[j].t()).argmax(dim=1) for j in ranking]
    return sav_decide(torch.stack(votes), ep.n_classes)


def floor(heads: int, rows: int, dim: int, classes: int) -> Callable[[], torch.Tensor]:
    """One batched product of heads x rows x dim x classes multiply-adds, on contiguous operands."""
    x = torch.randn(heads, rows, dim)
    p = torch.randn(heads, dim, classes)
    return lambda: torch.bmm(x, p)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float | bool]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    for name in FULL:
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--top-k", type=int, default=20, help="SAV heads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = {name: getattr(args, name) or default for name, default in (QUICK if args.quick else FULL).items()}
    ep = synthetic_episode(sizes["heads"], sizes["dim"], sizes["classes"], sizes["shots"], sizes["queries"], args.seed)
    n, m = len(ep.labels), len(ep.query_labels)
    heads, dim, classes = sizes["heads"], sizes["dim"], sizes["classes"]
    top_k = min(args.top_k, heads)

    def calm() -> torch.Tensor:
        return CALM().fit(ep.support, ep.labels).predict(ep.query)

    def sav() -> torch.Tensor:
        return SAV(top_k=top_k).fit(ep.support, ep.labels).predict(ep.query)

    checks = {
        "CALM": (calm(), calm_loop(ep)),
        "SAV": (sav(), sav_loop(ep, top_k)),
    }
    sav_rows = n + -(-top_k * m // heads)  # SAV scores all heads on S, only top_k heads on the queries
    timings = time_round_robin(
        {
            "CALM": calm,
            "CALM loop": lambda: calm_loop(ep),
            "CALM floor": floor(heads, n + m, dim, classes),
            "SAV": sav,
            "SAV loop": lambda: sav_loop(ep, top_k),
            "SAV floor": floor(heads, sav_rows, dim, classes),
        },
        sizes["repeats"],
    )

    print(
        f"episode: {heads} heads x {dim} dims, {classes} classes, {sizes['shots']} shots (n={n}), "
        f"{m} queries; torch threads {torch.get_num_threads()}; median of {sizes['repeats']}"
    )
    print(
        f"{'method':6} {'fit+predict':>12} {'loop':>10} {'loop/vec':>9} {'floor':>9} {'vec/floor':>10} "
        f"{'accuracy':>9}  loop predictions agree"
    )
    results: dict[str, dict[str, float | bool]] = {}
    for name, (pred, loop_pred) in checks.items():
        vec, loop, base = timings[name], timings[f"{name} loop"], timings[f"{name} floor"]
        agree = bool(torch.equal(pred, loop_pred))
        accuracy = float((pred == ep.query_labels).float().mean())
        results[name] = dict(
            seconds=vec,
            loop_seconds=loop,
            floor_seconds=base,
            loop_ratio=loop / vec,
            floor_ratio=vec / base,
            accuracy=accuracy,
            loop_agrees=agree,
        )
        print(
            f"{name:6} {vec * 1e3:9.1f} ms {loop * 1e3:7.1f} ms {loop / vec:8.1f}x {base * 1e3:6.1f} ms "
            f"{vec / base:9.2f}x {accuracy:9.3f}  {'yes' if agree else 'NO'} "
            f"({int((pred == loop_pred).sum())}/{m})"
        )
    print("targets: loop/vec >= 20x, vec/floor <= 3x (floor: one bmm with the method's cosine-product FLOPs)")
    return results


if __name__ == "__main__":
    main()
