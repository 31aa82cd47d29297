"""Holding a run directory for one writer: an OS file lock for a local run, a renewed lock object for one in a store.

A second writer is refused with the holder's pid, host, command and start
time. Whoever takes a local run's lock removes what killed writers left
behind (temporary directories); in a store, a commit removes the generations
failed uploads left (scaleout.storage).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

from scaleout import storage
from scaleout.errors import ScaleoutError, undone_at_stop
from scaleout.fsutil import utc_now

log = logging.getLogger(__name__)
LOCK = ".scaleout.lock"
# What a writer killed mid-stage leaves: atomic_dir's temporary and set-aside directories, an embeddings import.
# (.embeddings.partial is kept: the embedding job resumes from it.)
LEFTOVERS = (".*.tmp-*", ".*.old-*", ".*.import-*")


@contextlib.contextmanager
def hold_local(root: Path, command: str) -> Iterator[None]:
    """Holds the run directory ``root`` for one writer: a second command writing it meanwhile is refused, naming
    this one.

    The lock is an OS file lock (``flock``) on RUN/.scaleout.lock, released by
    the kernel when the process ends however it ends, so a killed writer never
    blocks the next one; the file is removed when the command ends. Whoever
    takes the lock removes what killed writers left behind (temporary
    directories, named in a warning): no one else is writing then.
    """
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise ScaleoutError(f"{root} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                                f"({holder.get('command', 'scaleout')}, started {holder.get('started', '?')}); wait "
                                "for it to finish, or stop it") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder we waited on removed the file as it finished: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "started": utc_now()}).encode())
        _remove_leftovers(root)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        if created and not any(root.iterdir()):
            root.rmdir()  # a command that wrote nothing leaves no empty run behind


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _remove_leftovers(root: Path) -> None:
    found = sorted({p for d in (root, *(c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")))
                    for pattern in LEFTOVERS for p in d.glob(pattern)})
    if found:
        log.warning("removing what an interrupted command left in %s: %s", root,
                    ", ".join(str(p.relative_to(root)) for p in found))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


LOCK_STALE_SECONDS = 300  # a holder renews its lock every minute; one not renewed for this long is gone


@contextlib.contextmanager
def hold_remote(uri: str, command: str) -> Iterator[None]:
    """An advisory lock object, RUN/.scaleout.lock, renewed every minute while the command runs.

    Object stores have no file locks: two writers starting in the same second
    could both take it. It stops the common mistake (a second job on a run
    in use) and names the holder; one that died stops counting after
    LOCK_STALE_SECONDS.
    """
    lock = storage.join(uri, LOCK)
    try:
        holder = json.loads(storage.read_bytes(lock))
    except FileNotFoundError:
        holder = None
    except ValueError:
        holder = {}
    if holder is not None and time.time() - float(holder.get("renewed", 0)) < LOCK_STALE_SECONDS:
        raise ScaleoutError(f"{uri} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                            f"({holder.get('command', 'scaleout')}, started {holder.get('started', '?')}); wait "
                            f"for it to finish, or stop it (a lock not renewed for {LOCK_STALE_SECONDS} s is "
                            "taken over)")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": utc_now(),
          "token": uuid.uuid4().hex}
    stop = threading.Event()

    def write() -> None:
        storage.write_bytes(lock, json.dumps({**me, "renewed": time.time()}).encode())

    def renew() -> None:
        while not stop.wait(60):
            with contextlib.suppress(OSError):
                write()

    def release() -> None:
        with contextlib.suppress(OSError, ValueError):
            current = json.loads(storage.read_bytes(lock))
            if current.get("token") == me["token"]:
                fs, path = storage.filesystem(lock)
                fs.delete_file(path)

    write()
    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        with undone_at_stop(release):  # SIGTERM: the next command need not wait LOCK_STALE_SECONDS
            yield
    finally:
        stop.set()
        thread.join()
        release()
