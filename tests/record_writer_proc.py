"""Writer process for the finished-record race test: writes one job's finished record many times.

Usage: python record_writer_proc.py FINISHED_DIR WRITER WRITES
It prints "ready", waits for a line on stdin (so several writers can be released together), writes
the record WRITES times with `calm.run.sweeps.mark_finished`, and prints "wrote N".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calm.run import sweeps

INPUTS = {"model": "0" * 64, "table": "0" * 64}


def record_config(finished_dir: Path) -> DictConfig:
    """The settings every writer (and the test's reader) keys the record by."""
    return OmegaConf.create({"paths": {"finished_dir": str(finished_dir)}, "shots": 1, "force": False})


def payload(writer: int, write: int) -> dict[str, Any]:
    """A record big enough (about 60 kB) that a shared temporary file is caught mid-write."""
    rows = [{"method": f"m{i}", "accuracy_mean": float(write), "writer": writer} for i in range(1000)]
    return {"config": {"shots": 1}, "results": rows, "writer": writer, "write": write}


def main() -> None:
    finished_dir, writer, writes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cfg = record_config(finished_dir)
    print("ready", flush=True)
    sys.stdin.readline()
    for write in range(writes):
        sweeps.mark_finished(cfg, payload(writer, write), finished_dir / f"job{writer}", INPUTS)
    print(f"wrote {writes}", flush=True)


if __name__ == "__main__":
    main()
