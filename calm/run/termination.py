"""A SIGTERM (`kill`, a SLURM pre-emption or time limit) stops a job cleanly: it raises JobTerminated,
at once, or, inside `at_step_end`, once the step being written is complete (an extraction batch is
committed, never cut). The job's W&B run is finished as failed on the way out; the entry point writes
error.txt and exits 128 + the signal number. Rows already in the cache stay: a rerun resumes.

Lightning installs its own SIGTERM handler while it predicts (it only notes the signal and goes on),
and calls this one too, which is why extraction defers rather than raising mid-batch. A process whose
host already handles SIGTERM keeps that policy: submitit (hydra/launcher=slurm) ignores SIGTERM and
requeues a pre-empted or timed-out job on its own signal (USR2).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class JobTerminated(Exception):
    """The job was stopped by a signal; what it wrote is kept and a rerun of the same command resumes."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum  # what a shell or SLURM reports for a process the signal ended
        super().__init__(
            f"the job was terminated by {signal.Signals(self.signum).name}; every cached row it "
            "wrote is kept, and a rerun of the same command resumes from them"
        )


class _Received:
    """The signal this job received (None until one comes) and how many `at_step_end` blocks are open."""

    signum: int | None = None
    deferring: int = 0


_received = _Received()


def _on_sigterm(signum: int, frame: Any) -> None:
    if _received.signum is not None:
        return  # already stopping: a second signal must not cut the cleanup short
    _received.signum = signum
    if _received.deferring:
        log.warning("%s received: stopping once the batch being extracted is written", signal.Signals(signum).name)
        return
    raise JobTerminated(signum)


@contextmanager
def stops_on_sigterm() -> Iterator[None]:
    """Around a job: a SIGTERM raises JobTerminated instead of killing the process. Any other error
    raised after the signal came (e.g. a data-loading worker the same signal ended) is reported as the
    termination it is. Only the main thread can receive signals, and a handler the host installed
    stays in charge (see the module docstring); in either case this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        log.debug("SIGTERM is already handled by %r; leaving it in charge", signal.getsignal(signal.SIGTERM))
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _received.signum, _received.deferring = None, 0
    try:
        yield
    except JobTerminated:
        raise
    except BaseException as err:
        if _received.signum is not None:
            raise JobTerminated(_received.signum) from err
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        _received.signum = None


@contextmanager
def at_step_end() -> Iterator[None]:
    """Work that stops between its steps, not inside one: a SIGTERM in the block is only noted. Each
    step's end calls `stop_if_terminated`; leaving the block after a signal raises JobTerminated."""
    _received.deferring += 1
    try:
        yield
    finally:
        _received.deferring -= 1
    stop_if_terminated()


def stop_if_terminated() -> None:
    """Raise JobTerminated when this job's handler has seen a SIGTERM (a step has just ended)."""
    if _received.signum is not None:
        raise JobTerminated(_received.signum)
