"""CALM that, when CALM_TEST_STALL names a file, writes it on its first fit and then waits: a job held
in its evaluation, so a test can signal it there. Without the variable it is plain CALM."""

from __future__ import annotations

import os
import time
from pathlib import Path

from calm.methods import CALM

STALL_ENV = "CALM_TEST_STALL"
STALL_SECONDS = 120.0  # a bound: a signal that never comes lets the job finish, and the test fails


class StallingCALM(CALM):
    def fit(self, *args, **kwargs):
        marker = os.environ.get(STALL_ENV)
        if marker and not Path(marker).exists():
            Path(marker).write_text("evaluating\n")
            deadline = time.monotonic() + STALL_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return super().fit(*args, **kwargs)
