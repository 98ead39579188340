"""How much the batch a clip is extracted in moves its cached fp16 row: the bound docs/design/cache.md's
section states.

Batch size is not part of a row's key (a cache filled with `extract.batch_size=16` serves a job run
with 4), but the model's matrix kernels sum in another order for another batch shape, so the float32
head outputs differ in their last bits, and the float16 rounding of the stored row can land one step
apart. This script extracts the same real clips twice through the framework's Lightning extraction
(`calm.extraction.extract.extract_missing`): each clip alone, and in batches of `--batch-size`; it prints the
largest difference between the two caches' rows, absolute and relative to the largest value of the
same head (one float16 step at that magnitude is 2**-11 to 2**-10 of it), and the batch sizes each
cache's index recorded.

    python scripts/measure_batch_rows.py                       # Whisper tiny.en, 8 FSDD clips, CPU
    python scripts/measure_batch_rows.py --precision 16-mixed --accelerator gpu
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calm.backbones.whisper import WhisperBackbone
from calm.cache import ActivationCache
from calm.config.assets import assets_dir
from calm.data.fsdd import load_fsdd
from calm.data.prompts import Prompt
from calm.extraction.extract import extract_missing
from calm.extraction.row_inputs import model_key_fields


def relative_to_head(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| over the largest |value| of the same clip and head (rows are (clips, heads, head_dim)): a
    float16 step at that magnitude is 2**-11 to 2**-10 of it."""
    scale = np.maximum(np.abs(a), np.abs(b)).astype(np.float32).max(axis=2, keepdims=True)
    return np.abs(a.astype(np.float32) - b.astype(np.float32)) / np.maximum(scale, np.finfo(np.float32).tiny)


def extracted_rows(
    weights: Path, fsdd: Path, clip_ids: Sequence[str], batch_size: int, cache_dir: Path, trainer: dict[str, Any]
) -> tuple[np.ndarray, dict[str, int]]:
    """The stored rows of `clip_ids` (float16 values), extracted in batches of `batch_size`, and the batch
    size each row's index line recorded."""
    backbone = WhisperBackbone(path=str(weights), precision=str(trainer["precision"]))
    table = load_fsdd(fsdd)
    prompt = Prompt()
    cache = ActivationCache.open(
        cache_dir, model_key_fields(backbone, prompt), backbone.n_heads, backbone.head_dim, label=backbone.name
    )
    extract_missing(backbone, table, prompt, cache, trainer, batch_size=batch_size, clip_ids=clip_ids)
    facts = cache.facts(clip_ids)
    return cache.read(clip_ids).numpy(), {cid: facts[cid].batch_size for cid in clip_ids}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=assets_dir() / "whisper-tiny.en")
    parser.add_argument("--fsdd", type=Path, default=assets_dir() / "fsdd", help="the folder holding recordings/")
    parser.add_argument("--clips", type=int, default=8, help="one recording per digit, speakers in turn")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="32-true", help="trainer.precision (the default config's)")
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args(argv)

    speakers = ("george", "jackson", "lucas", "nicolas", "yweweler")
    clip_ids = [f"{n % 10}_{speakers[n % len(speakers)]}_{n}" for n in range(args.clips)]
    trainer = {"accelerator": args.accelerator, "devices": 1, "precision": args.precision, "enable_progress_bar": False}
    with tempfile.TemporaryDirectory() as tmp:
        alone, alone_sizes = extracted_rows(args.weights, args.fsdd, clip_ids, 1, Path(tmp) / "alone", trainer)
        batched, batched_sizes = extracted_rows(
            args.weights, args.fsdd, clip_ids, args.batch_size, Path(tmp) / "batched", trainer
        )
    diff = np.abs(alone.astype(np.float32) - batched.astype(np.float32))
    result = {
        "clips": len(clip_ids),
        "batch_size": args.batch_size,
        "max_abs_diff": float(diff.max()),
        "max_relative_to_head": float(relative_to_head(alone, batched).max()),
        "largest_value": float(np.abs(alone).max()),
        "entries_differing": float((diff > 0).mean()),
        "rows_differing": int((diff > 0).any(axis=(1, 2)).sum()),
        "recorded_batch_sizes": {
            "alone": sorted(set(alone_sizes.values())),
            "batched": sorted(set(batched_sizes.values())),
        },
    }
    print(
        f"{len(clip_ids)} real FSDD clips, Whisper tiny.en ({args.precision}, {args.accelerator}): rows extracted "
        f"alone vs in batches of {args.batch_size}"
    )
    print(
        f"  max |difference|: {result['max_abs_diff']:.3g} (values up to {result['largest_value']:.3g}); at most "
        f"{result['max_relative_to_head']:.3g} of the largest |value| of the same head (2**-10 = 9.77e-4)"
    )
    print(
        f"  {result['rows_differing']} of {len(clip_ids)} rows and {100 * result['entries_differing']:.3f} % of "
        "entries differ"
    )
    print(
        f"  batch sizes recorded in the index: alone {result['recorded_batch_sizes']['alone']}, "
        f"batched {result['recorded_batch_sizes']['batched']}"
    )
    return result


if __name__ == "__main__":
    main()
