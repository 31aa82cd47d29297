"""Errors the command line reports as a one-line message and a non-zero exit."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class ScaleoutError(Exception):
    """Base for errors caused by the user's input or settings, not by a bug."""


class DataError(ScaleoutError, ValueError):
    """Input data is missing or malformed; the message names file, line and field."""


class ArtifactError(ScaleoutError):
    """A prepared dataset, model or export is missing, incomplete or mismatched."""


class ConfigError(ScaleoutError, ValueError):
    """A setting is out of range or names something unknown."""


class TrainingDiverged(ScaleoutError):
    """The training loss became NaN or infinite; nothing was saved."""


class Stopped(BaseException):
    """The process was asked to stop (SIGTERM from ``ray job stop``, a scheduler or ``kill``; SIGINT), raised in the
    main thread so that every cleanup on the way out runs (temporary outputs and scratch directories removed,
    locks released) before the command exits with ``exit_code``. Not an Exception: nothing that handles
    errors may swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, each of ``signums`` raises ``Stopped`` in the main thread, once: a second signal while the
    cleanup runs ends the process as it would have without the block. Outside the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for s in signums:
            signal.signal(s, signal.SIG_DFL)
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
