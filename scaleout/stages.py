"""Wall time and peak memory of each stage of a run, logged as each stage ends and kept for its summary.

The peak is this process's resident high-water mark (``VmHWM``), reset at the
start of each stage where Linux allows it (``/proc/self/clear_refs``), so each
stage's figure is its own; where it cannot be reset, the figure is the peak
since the process started, and says so. Memory of other processes (Ray
workers) is not in it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int | None:
    """This process's resident high-water mark in bytes, or None where /proc does not give it."""
    return _status_bytes("VmHWM")


def reset_peak_rss() -> bool:
    """Starts the high-water mark again from the current resident size; False where Linux does not allow it."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


class Stages:
    """``with stages("train"): ...`` times the block and records its peak memory under that name."""

    def __init__(self) -> None:
        self.figures: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        own = reset_peak_rss()
        before = _status_bytes("VmRSS")
        start = time.monotonic()
        yield
        seconds = time.monotonic() - start
        peak = peak_rss_bytes()
        if peak is not None and before is not None:
            # Linux counts each thread's resident pages apart and adds them up now and then (64 faults), so
            # the mark the reset set and the size read just after it can differ by a few MB either way; the
            # stage held at least what it started with.
            peak = max(peak, before)
        self.figures[name] = {"seconds": round(seconds, 2),
                              "peak_rss_gib": None if peak is None else round(peak / 2**30, 3),
                              "peak_of_stage": own,
                              # what the process held already (TensorFlow keeps what it allocated)
                              "rss_at_start_gib": None if before is None else round(before / 2**30, 3)}
        shown = "unknown" if peak is None else f"{peak / 2**30:.2f} GiB" + ("" if own else " (since start)")
        log.info("stage %s done in %.1f s, peak memory %s", name, seconds, shown)


PROGRESS_SECONDS = 30.0  # the longest a long loop goes without a line on the terminal


class Progress:
    """How far a long loop has got, logged at most every PROGRESS_SECONDS: ``what: done of total unit, rate``.

    ``progress(done)`` after each step of the loop; ``logger`` is the caller's,
    so the line is attributed to the stage's module. Nothing is logged before
    the first interval has passed, so short loops stay quiet.
    """

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str, rate_unit: str | None = None):
        self.logger, self.what, self.total, self.unit = logger, what, total, unit
        self.rate_unit = rate_unit or f"{unit} a second"
        self.every = PROGRESS_SECONDS
        self.start = self.shown = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.shown < self.every:
            return
        self.shown = now
        done = min(done, self.total)
        self.logger.info("%s: %s of %s %s, %s %s", self.what, f"{done:,}", f"{self.total:,}", self.unit,
                         f"{done / max(now - self.start, 1e-9):,.0f}", self.rate_unit)
