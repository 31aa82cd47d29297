"""Users' own interactions: CSV or Parquet files with ``user_id`` and ``item_id``.

Optional columns: ``timestamp`` (integer seconds), ``rating`` and an item
title (``item_title`` or ``title``; the item id stands in where there is
none). Other columns are ignored. ``path`` is one file or a directory of
``*.csv`` / ``*.parquet`` files read in name order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.data.schema import conform, interaction_schema
from scaleout.data.text import Layout, read_delimited
from scaleout.errors import DataError

# file column -> (schema column, Arrow type read as)
KNOWN = {
    "user_id": ("user_id", pa.string()),
    "item_id": ("movie_id", pa.string()),
    "timestamp": ("timestamp", pa.int64()),
    "rating": ("user_rating", pa.float32()),
    "item_title": ("movie_title", pa.string()),
    "title": ("movie_title", pa.string()),
}
REQUIRED = ("user_id", "item_id")


class GenericInteractions:
    name = "generic"

    def __init__(self, path: str):
        self.path = Path(path)
        if self.path.is_dir():
            self.paths = sorted(p for p in self.path.iterdir() if p.suffix.lower() in (".csv", ".parquet"))
            if not self.paths:
                raise DataError(f"{self.path}: no .csv or .parquet files in this directory")
        elif self.path.is_file():
            if self.path.suffix.lower() not in (".csv", ".parquet"):
                raise DataError(f"{self.path}: expected a .csv or .parquet file")
            self.paths = [self.path]
        else:
            raise DataError(f"{self.path}: no such file or directory")
        self._columns = [self._file_columns(p) for p in self.paths]
        first = self._columns[0]
        for p, cols in zip(self.paths[1:], self._columns[1:]):
            if set(cols) != set(first):
                raise DataError(f"{p}: columns {sorted(cols)} differ from {self.paths[0]}'s {sorted(first)}")

    def describe(self) -> dict:
        return {"source": self.name, "path": str(self.path), "files": [str(p) for p in self.paths]}

    @property
    def columns(self) -> tuple[str, ...]:
        cols = ["user_id", "movie_id", "movie_title"]
        cols += [KNOWN[c][0] for c in ("timestamp", "rating") if c in self._columns[0]]
        return tuple(cols)

    def items(self) -> None:
        """None: the candidates are the distinct items of the interactions."""
        return None

    def interactions(self, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        schema = interaction_schema(self.columns)
        for path, cols in zip(self.paths, self._columns):
            for batch in self._read(path, cols, chunk_rows):
                renamed = {}
                for c in batch.schema.names:
                    if c in KNOWN and KNOWN[c][0] not in renamed:
                        renamed[KNOWN[c][0]] = batch.column(c)
                if "movie_title" not in renamed:
                    renamed["movie_title"] = renamed["movie_id"]
                yield conform(pa.RecordBatch.from_pydict(renamed), schema, str(path))

    def _file_columns(self, path: Path) -> list[str]:
        if path.suffix.lower() == ".parquet":
            try:
                names = pq.read_schema(path).names
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        else:
            with open(path, "rb") as f:
                header = f.readline()
            try:
                names = [c.strip().strip('"') for c in header.decode("utf-8").rstrip("\r\n").split(",")]
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line 1: the header is not valid UTF-8") from exc
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {names}, expected {list(REQUIRED)} "
                            f"and optionally {[c for c in KNOWN if c not in REQUIRED]}")
        return names

    def _read(self, path: Path, names: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
        if path.suffix.lower() == ".parquet":
            wanted = [c for c in names if c in KNOWN]
            yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=wanted)
            return
        layout = Layout(
            tuple((c, KNOWN[c][1]) if c in KNOWN else (f"_{c}", pa.string()) for c in names),
            ",", header=True, quoting=True,
        )
        yield from read_delimited(functools.partial(open, path, "rb"), layout, str(path))


def distinct_items(table: pa.Table) -> pa.Table:
    """(movie_id, movie_title) with the first title seen for each id, sorted by id."""
    grouped = table.select(["movie_id", "movie_title"]).group_by("movie_id", use_threads=False).aggregate(
        [("movie_title", "first")])
    return pa.table({"movie_id": grouped.column("movie_id"), "movie_title": grouped.column("movie_title_first")})


def merge_items(parts: list[pa.Table]) -> pa.Table:
    """Folds per-chunk ``distinct_items`` results into one table sorted by id."""
    return distinct_items(pa.concat_tables(parts)).sort_by("movie_id")
