"""The candidate table cut into parts of about ``part_rows`` rows, fixed by the files' row counts alone.

A part never spans two files; ``read_part`` gives its rows as (movie_id,
movie_title, part number), with ids checked (every candidate needs one) and
cast to strings. The embedding job (scaleout.embed.job) embeds one part at a
time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaleout.embed.embedding_set import ID, TITLE
from scaleout import storage
from scaleout.errors import DataError, ScaleoutError
from scaleout.fsutil import sha256
from scaleout.names import part_name

PART_COLUMN = "_part"


@dataclasses.dataclass(frozen=True)
class Part:
    number: int
    file: str
    start: int  # first row in ``file``
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return part_name(self.number)


def candidate_files(path: str | Path) -> list[Path] | list[str]:
    """The Parquet files of a candidate table: ``path`` itself, or every ``*.parquet`` under it (paths, or URIs
    for a table on object storage)."""
    if storage.is_remote(str(path)):
        uri = str(path).rstrip("/")
        try:
            if uri.endswith(".parquet") and storage.exists(uri):
                return [uri]
            files = [storage.join(uri, rel) for rel in sorted(storage.list_files(uri))
                     if rel.endswith(".parquet") and not rel.rsplit("/", 1)[-1].startswith(".")]
        except OSError as exc:
            raise storage.StorageError(storage.describe_error(uri, exc)) from None
        if files:
            return files
        raise DataError(f"{uri}: no .parquet objects under this prefix; expected the candidate table's shards")
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if files:
            return files
        raise DataError(f"{path}: no .parquet files in this directory; expected the candidate table's shards")
    raise DataError(f"{path}: no such candidate table (a Parquet file or a directory of them)")


def file_label(f: Path | str) -> str:
    """How a manifest names a candidate file: its URI, or its absolute path."""
    return str(f) if storage.is_remote(str(f)) else str(Path(f).resolve())


def file_sha256(f: Path | str) -> str:
    """sha256 of a candidate file, local or in the store (streamed)."""
    if not storage.is_remote(str(f)):
        return sha256(f)
    fs, path = storage.filesystem(str(f))
    h = hashlib.sha256()
    with fs.open_input_stream(path) as src:
        while chunk := src.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def open_parquet(f: Path | str) -> pq.ParquetFile:
    """The Parquet file at a path or URI (only its footer is read now)."""
    try:
        if storage.is_remote(str(f)):
            fs, path = storage.filesystem(str(f))
            return pq.ParquetFile(fs.open_input_file(path))
        return pq.ParquetFile(f)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{f}: not a readable Parquet file ({exc})") from exc


def plan_parts(files: list[Path], part_rows: int) -> list[Part]:
    """Cuts the files into parts of at most ``part_rows`` rows (a part never spans two files)."""
    if part_rows < 1:
        raise ScaleoutError(f"part_rows must be at least 1, got {part_rows}")
    parts: list[Part] = []
    for f in files:
        meta = open_parquet(f)
        names = meta.schema_arrow.names
        if ID not in names:
            raise DataError(f"{f}: no {ID!r} column; a candidate table needs {ID!r} (and optionally {TITLE!r}); "
                            f"it has {names}")
        n = meta.metadata.num_rows
        for start in range(0, n, part_rows):
            parts.append(Part(len(parts), file_label(f), start, min(n, start + part_rows)))
    if not parts:
        raise DataError(f"the candidate table {', '.join(map(str, files))} has no rows; nothing to embed")
    return parts


def read_part(part: Part) -> pa.Table:
    """The part's rows: movie_id (string), movie_title (string or null) and the part number."""
    pf = open_parquet(part.file)
    columns = [ID] + ([TITLE] if TITLE in pf.schema_arrow.names else [])
    groups, offset, first = [], 0, None
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset < part.stop and offset + n > part.start:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups, columns=columns).slice(part.start - first, part.rows)
    ids = table.column(ID)
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        if not pa.types.is_integer(ids.type):
            raise DataError(f"{part.file}: column {ID!r} is {ids.type}; expected strings or integers")
        ids = pc.cast(ids, pa.string())
    empty = pc.or_kleene(pc.is_null(ids), pc.equal(pc.utf8_length(pc.cast(ids, pa.string())), 0))
    if pc.any(empty).as_py():
        row = part.start + int(pc.index(empty, True).as_py())
        raise DataError(f"{part.file}: row {row + 1}: {ID} is empty; every candidate needs an id")
    titles = table.column(TITLE).cast(pa.string()) if TITLE in columns else pa.nulls(part.rows, pa.string())
    return pa.table({ID: pc.cast(ids, pa.string()), TITLE: titles,
                     PART_COLUMN: pa.array(np.full(part.rows, part.number, dtype=np.int32))})
