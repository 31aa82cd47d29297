"""Writing outputs whole or not at all: temporary path, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yields an empty temporary directory beside ``final``; renames it to ``final`` on success.

    On an exception the temporary directory is removed and an existing
    ``final`` is left as it was. An existing ``final`` is replaced only once
    the new one is complete (moved aside, the new one renamed in, the old one
    deleted).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(complete: Path, final: Path) -> None:
    """Renames the finished directory ``complete`` to ``final``, replacing an existing one only now."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(complete, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def utc_now() -> str:
    """The current time as every scaleout manifest records it: ISO 8601 in UTC, ``2026-11-29T16:20:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_manifest(path: Path, fmt: str, missing: str) -> dict:
    """The JSON manifest at ``path``, of format ``fmt``; ArtifactError with ``missing`` when there is none."""
    from scaleout.errors import ArtifactError

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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


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
