"""Writing outputs whole or not at all (temporary path, then rename), and checksums remembered per file state."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from scaleout.errors import ArtifactError


@contextlib.contextmanager
def atomic_dir(final: str | Path, marker: str, force: bool = False) -> Iterator[Path]:
    """Yields an empty temporary directory beside ``final``; renames it to ``final`` on success.

    On an exception the temporary directory is removed and an existing
    ``final`` is left as it was. An existing ``final`` is replaced only once
    the new one is complete (moved aside, the new one renamed in, the old one
    deleted), and only if scaleout wrote it: see ``check_replaceable``, which
    runs before the work starts as well, so a refusal costs nothing.
    """
    final = Path(final)
    check_replaceable(final, marker, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final, marker, force)


def check_replaceable(final: str | Path, marker: str, force: bool = False) -> None:
    """ArtifactError unless ``final`` may be replaced: it is absent or empty, or it holds ``marker``, the file
    scaleout writes into every directory of this kind (a dataset's manifest.json, a model's model.json, ...).

    A directory of someone else's files is never removed unless ``force``.
    """
    final = Path(final)
    if force or not final.exists():
        return
    if not final.is_dir():
        raise ArtifactError(f"{final}: exists and is not a directory; choose another path (or pass --force to "
                            "replace it)")
    entries = sorted(p.name for p in final.iterdir())
    if entries and marker not in entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise ArtifactError(f"{final}: not written by scaleout (no {marker}; it holds {shown}); refusing to replace "
                            "it: choose another path, or pass --force to replace it")


def replace_dir(complete: Path, final: Path, marker: str, force: bool = False) -> None:
    """Renames the finished directory ``complete`` to ``final``, replacing an existing one only now (and only one
    that ``check_replaceable`` allows)."""
    check_replaceable(final, marker, force)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(complete, final)
    moved(complete, final)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:  # a file replaced with --force
            old.unlink()


def utc_now() -> str:
    """The current time as every scaleout manifest records it: ISO 8601 in UTC, ``2026-11-29T16:20:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_manifest(path: Path, fmt: str, missing: str) -> dict:
    """The JSON manifest at ``path``, of format ``fmt``; ArtifactError with ``missing`` when there is none."""
    if not path.is_file():
        raise ArtifactError(missing)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    if manifest.get("format") != fmt:
        raise ArtifactError(f"{path}: format {manifest.get('format')!r}; expected {fmt!r}")
    return manifest


def write_json(path: str | Path, obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def sha256(path: str | Path, block: int = 1 << 20) -> str:
    """sha256 of the file at ``path``, remembered per file state (see ``ChecksumCache``): a file unchanged since
    it was last hashed is not read again."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    found = _CACHE.get(key)
    if found is not None:
        return found
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    digest = h.hexdigest()
    _CACHE.put(key, digest)
    return digest


class ChecksumCache:
    """sha256 per file state (absolute path, size, mtime in ns, inode), in a SQLite file shared by the processes
    of this machine: ``$SCALEOUT_CACHE_DIR/checksums.sqlite`` (default ``~/.cache/scaleout``). A file written
    again gets a new mtime and inode, so its old entry no longer matches. Where the cache cannot be opened
    (a read-only home), files are hashed every time."""

    def __init__(self):
        self._db = None
        self._lock = threading.Lock()  # one connection, used from any thread (Ray actors call from several)

    def _open(self):
        if self._db is None:
            root = Path(os.environ.get("SCALEOUT_CACHE_DIR", Path.home() / ".cache" / "scaleout"))
            try:
                root.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(root / "checksums.sqlite", timeout=30, isolation_level=None,
                                     check_same_thread=False)
                db.execute("CREATE TABLE IF NOT EXISTS sha256 (path TEXT, size INTEGER, mtime_ns INTEGER, "
                           "inode INTEGER, digest TEXT, PRIMARY KEY (path, size, mtime_ns, inode))")
                self._db = db
            except (OSError, sqlite3.Error):
                self._db = False
        return self._db

    def get(self, key):
        with self._lock:
            db = self._open()
            if not db:
                return None
            try:
                row = db.execute("SELECT digest FROM sha256 WHERE path=? AND size=? AND mtime_ns=? AND inode=?",
                                 key).fetchone()
            except sqlite3.Error:
                return None
        return row[0] if row else None

    def moved(self, old: Path, new: Path) -> None:
        """The entries of the file or directory tree at ``old``, renamed to ``new``, under their new paths: a
        writer hashes its files under a temporary name, and a rename keeps each file's size, mtime and inode."""
        old, new = str(old.parent.resolve() / old.name), str(new.parent.resolve() / new.name)
        with self._lock:
            db = self._open()
            if not db:
                return
            try:
                # a path or any path under it: "/" is followed by "0" in byte order (the primary key's index)
                under = "path=? OR (path>? AND path<?)"
                # whatever was recorded under the new paths went with the rename
                db.execute(f"DELETE FROM sha256 WHERE {under}", (new, new + "/", new + "0"))
                db.execute(f"UPDATE sha256 SET path=? || substr(path, ?) WHERE {under}",
                           (new, len(old) + 1, old, old + "/", old + "0"))
            except sqlite3.Error:
                pass  # a busy or read-only cache: the files are hashed again under their new paths

    def put(self, key, digest):
        with self._lock:
            db = self._open()
            if not db:
                return
            try:
                db.execute("DELETE FROM sha256 WHERE path=?", key[:1])
                db.execute("INSERT OR REPLACE INTO sha256 VALUES (?, ?, ?, ?, ?)", (*key, digest))
            except sqlite3.Error:
                pass  # a busy or read-only cache: the file is hashed again next time


_CACHE = ChecksumCache()


def moved(old: str | Path, new: str | Path) -> None:
    """Tells the checksum cache that the file or directory ``old`` was renamed to ``new`` (``os.replace``), so
    that its files, hashed by their writer, are not read again under their new names."""
    _CACHE.moved(Path(old), Path(new))


def tree_fingerprint(root: str | Path) -> str:
    """One sha256 over every file under ``root``: its relative path, size and content."""
    h = hashlib.sha256()
    for name, entry in checksums(root).items():
        h.update(f"{name}\0{entry['bytes']}\0{entry['sha256']}\n".encode())
    return h.hexdigest()


def json_fingerprint(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checksums(root: str | Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} for every file under ``root``."""
    root = Path(root)
    return {
        str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def first_changed(root: str | Path, recorded: dict[str, dict[str, Any]]) -> str | None:
    """The first of the files ``recorded`` ({relative path: {bytes, sha256}}, as ``checksums`` gives them) that is
    missing under ``root`` or differs from its record; None when every one is as recorded."""
    root = Path(root)
    for name, entry in recorded.items():
        path = root / name
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            return name
    return None


def save_npy(path: str | Path, array) -> None:
    """np.save, where a write cut short (numpy's OSError "N requested and M written", without an errno: a full
    disk or a spent quota) is an OSError with ENOSPC naming the file, as other writes' are."""
    import numpy as np

    try:
        np.save(path, array)
    except OSError as exc:
        if exc.errno is not None or "written" not in str(exc):
            raise
        raise OSError(errno.ENOSPC, f"No space left on device? A write was cut short ({exc})", str(path)) from exc
