"""Local scratch directories that a killed process does not leave behind for good.

A Ray Train worker is ended by Ray without running its ``finally`` blocks or
``atexit`` hooks, and a worker or command may be killed outright (a lost node,
``kill -9``, the fault-tolerance tests): its temporary directories, which may hold
its share of a fetched dataset or a checkpoint, would stay in the node's temporary
directory run after run. So each scratch directory is named after the process that
made it (``scaleout-scratch-<purpose>-<host>-<pid>-<start>-<random>``: this host's
tag, the process id and the process's start time), removed when its block ends,
and otherwise removed by the next scratch directory made on the same host once its
process has ended (``sweep``). A directory of another name, of another host, or of a
process still running (the same id and start time) is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from scaleout.errors import undone_at_stop

log = logging.getLogger(__name__)

PREFIX = "scaleout-scratch-"
_NAME = re.compile(r"^scaleout-scratch-(?P<purpose>[a-z]+)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-[^-]+$")


def host_tag() -> str:
    """8 hex digits of this host's name."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), 0 where /proc is not there and the
    process exists, or None when no such process runs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    # The command name, in parentheses, may hold spaces: the fields after its closing one are fixed.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def owner_alive(name: str) -> bool | None:
    """Whether the process that made scratch directory ``name`` (on this host) still runs; None for a name that is
    not a scratch directory of this host."""
    match = _NAME.match(name)
    if match is None or match["host"] != host_tag():
        return None
    return process_start(int(match["pid"])) == int(match["start"])


def sweep(directory: str | Path | None = None) -> list[Path]:
    """Removes the scratch directories in ``directory`` (the temporary directory) that this host's ended processes
    left; returns them."""
    removed = []
    for path in Path(directory or tempfile.gettempdir()).glob(PREFIX + "*"):
        if path.is_dir() and not path.is_symlink() and owner_alive(path.name) is False:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d scratch director%s left by ended processes: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", ", ".join(p.name for p in removed))
    return removed


def make(purpose: str, directory: str | Path | None = None) -> Path:
    """A new scratch directory for ``purpose`` (lower-case letters) in ``directory`` (the temporary directory),
    after sweeping what ended processes left there. The caller removes it; see ``scratch``."""
    if not re.fullmatch(r"[a-z]+", purpose):
        raise ValueError(f"purpose {purpose!r}: lower-case letters only")
    sweep(directory)
    pid = os.getpid()
    prefix = f"{PREFIX}{purpose}-{host_tag()}-{pid}-{process_start(pid) or 0}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=directory))


@contextlib.contextmanager
def scratch(purpose: str, directory: str | Path | None = None) -> Iterator[Path]:
    """``make``'s directory, removed when the block ends or SIGTERM stops the process (``stop_on_sigterm``), and by
    the next sweep if the process is killed first."""
    path = make(purpose, directory)
    remove = lambda: shutil.rmtree(path, ignore_errors=True)  # noqa: E731
    try:
        with undone_at_stop(remove):
            yield path
    finally:
        remove()
