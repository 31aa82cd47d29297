"""Errors the command line reports as a one-line message and a non-zero exit."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
from typing import Callable, Iterator


class ScaleoutError(Exception):
    """Base for errors caused by the user's input or settings, not by a bug."""


class DataError(ScaleoutError, ValueError):
    """Input data is missing or malformed; the message names file, line and field."""


class ArtifactError(ScaleoutError):
    """A prepared dataset, model or export is missing, incomplete or mismatched."""


class ConfigError(ScaleoutError, ValueError):
    """A setting is out of range or names something unknown."""


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line only, less TensorFlow's op prefix ("{{function_node ...}} "):
    TensorFlow's errors run on with the op's graph, where the command line gives one line."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line) or type(exc).__name__


class TrainingDiverged(ScaleoutError):
    """The training loss became NaN or infinite; nothing was saved."""


def settings_differ(recorded: dict, wanted: dict, was: str, defaults: dict | None = None) -> str:
    """Each setting of ``wanted`` that ``recorded`` holds otherwise, as "name: <was> recorded, now wanted", joined
    by "; " ('' where none differs): what an error says when an artifact was made with other settings.

    A setting ``recorded`` lacks but ``defaults`` holds counts as its default: the artifact was written before
    that setting existed, and a setting is added with the default that keeps the former behaviour (so a
    checkpoint or a prepared run from an earlier version still continues where nothing it did has changed)."""
    defaults = defaults or {}

    def had(k):
        return recorded[k] if k in recorded else defaults.get(k)

    return "; ".join(f"{k}: {was} {had(k)!r}, now {value!r}" for k, value in wanted.items() if had(k) != value)


_AT_STOP: list[Callable[[], None]] = []  # what a stop undoes, in the order registered


@contextlib.contextmanager
def undone_at_stop(undo: Callable[[], None]) -> Iterator[None]:
    """Within the block, ``undo()`` runs should the process be stopped by SIGTERM (see ``stop_on_sigterm``): what a
    killed process would leave for others to clean up or wait out (a scratch directory, a lock in a store)."""
    _AT_STOP.append(undo)
    try:
        yield
    finally:
        _AT_STOP.remove(undo)


@contextlib.contextmanager
def stop_on_sigterm(name: str) -> Iterator[None]:
    """Within the block, SIGTERM (``ray job stop``, a scheduler, ``kill``) runs what ``undone_at_stop`` registered
    (the newest first), prints one line naming ``name``, and ends the process at once with status 143.

    It does not raise into the code the main thread is in: in the middle of Ray's driver an exception from a
    signal handler is caught, wrapped or lost, and training went on. A second SIGTERM ends the process as it
    would have without the block. Outside the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for undo in reversed(list(_AT_STOP)):
            try:
                undo()
            except Exception:  # noqa: BLE001  (the others still run; the process ends either way)
                pass
        print(f"{name}: stopped by SIGTERM; its scratch directories were removed and its lock released; the next "
              "command on the run removes any output it left unfinished", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
