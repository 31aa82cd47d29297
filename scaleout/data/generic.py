"""Users' own interactions: CSV or Parquet files with ``user_id`` and ``item_id``.

Optional columns: ``timestamp`` (integer seconds, written as a whole number or,
as pandas writes an integer column with a gap, with a point and zeros after it,
``978300760.0``; or as ISO 8601 text, ``2020-01-31 12:30:00`` with a zone or in
UTC, a date alone at midnight; in Parquet also a float column of whole numbers,
or a timestamp or date column; read as seconds since the epoch, below a second
dropped), ``rating``
and an item title (``item_title`` or ``title``; the item id stands in where
there is none, or on a row whose title is empty, and an item's candidate takes
the first title any of its rows has). Other columns are ignored. ``path`` is one file or a directory of
``*.csv`` / ``*.parquet`` files read in name order; a CSV file may start with
a UTF-8 byte-order mark, and may be compressed (``.csv.gz``, ``.csv.bz2``,
``.csv.zst``: read as a stream, line numbers those of the uncompressed text;
a file that does not decompress, or ends early, is refused naming it).

Refused, naming the file and line (CSV) or row (Parquet): an empty or
whitespace-only id, an empty timestamp or one that is not a whole number (or,
in a column whose first value is ISO 8601 text, a date and time that is not), a
rating that is empty, NaN, infinite or not a number, a float id that is not
a whole number below 2^53 in size (2^24 in a float32 column: beyond it a
float holds ids only approximately), a decimal id that is not a whole number,
a bytes id that is not UTF-8. A Parquet id column of another type than text,
bytes, integers, floats or decimals is refused naming its type. Repeated (user, item) pairs:
``repeated_pairs="first"`` (the default) keeps the first row of each pair, so
that one pair never lands in both the train and the test split; ``"all"``
keeps every row. Keeping the first means remembering every pair seen: 8 bytes
a distinct pair, and each distinct id once (scaleout.data.pairs).
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaleout.data.generic_values import (REQUIRED, cast_values, check_id_types, check_values, text_ids,
                                          titles_as_text, whole_number_ids)
from scaleout.data.pairs import IdCodes, PairSet
from scaleout.data.schema import conform, interaction_schema
from scaleout.data.text import Layout, read_delimited
from scaleout.errors import DataError

# file column -> (schema column, Arrow type read as)
KNOWN = {
    "user_id": ("user_id", pa.string()),
    "item_id": ("movie_id", pa.string()),
    "timestamp": ("timestamp", pa.string()),  # CSV: read as text, then whole seconds (_whole_seconds)
    "rating": ("user_rating", pa.float32()),
    "item_title": ("movie_title", pa.string()),
    "title": ("movie_title", pa.string()),
}
CSV_ENDINGS = {".csv": None, ".csv.gz": "gzip", ".csv.bz2": "bz2", ".csv.zst": "zstd"}  # ending -> codec
READ = "a .csv (or .csv.gz, .csv.bz2, .csv.zst) or .parquet file"
_MAX_CODE = 2**31 - 1  # distinct users or items numbered for a pair's int64 key (scaleout.data.pairs)

log = logging.getLogger(__name__)


class GenericInteractions:
    name = "generic"

    def __init__(self, path: str, repeated_pairs: str = "first"):
        self.path = Path(path)
        self.repeated_pairs = repeated_pairs
        if self.path.is_dir():
            self.paths = sorted(p for p in self.path.iterdir() if p.is_file() and _kind(p))
            if not self.paths:
                raise DataError(f"{self.path}: no .csv or .parquet files in this directory (each file read is {READ})")
        elif self.path.is_file():
            if not _kind(self.path):
                raise DataError(f"{self.path}: expected {READ}")
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
        seen = _Pairs() if self.repeated_pairs == "first" else None
        for path, cols in zip(self.paths, self._columns):
            first_row, text_way = 0, {}  # a text timestamp column's way, fixed by the file's first value
            untitled = 0  # rows with a title column but no title in it
            for batch in self._read(path, cols, chunk_rows):
                renamed, title = {}, None
                for c in batch.schema.names:
                    if c in KNOWN and KNOWN[c][0] not in renamed:
                        renamed[KNOWN[c][0]] = batch.column(c)
                        title = c if KNOWN[c][0] == "movie_title" else title
                where = functools.partial(_row_of_chunk, path, first_row)
                text_ids(renamed, where)
                whole_number_ids(renamed, where)
                cast_values(renamed, path, where, text_way)
                check_values(renamed, where)
                untitled += titles_as_text(renamed, title, path, where)
                first_row += batch.num_rows
                out = conform(pa.RecordBatch.from_pydict(renamed), schema, str(path))
                yield out if seen is None else seen.first_of(out)
            if untitled:
                log.info("%s: %s rows with an empty item title; their item id stands in", path, f"{untitled:,}")
        if seen is not None and seen.dropped:
            log.info("%s: %s repeated (user, item) rows left out, the first row of each pair kept (--repeated-pairs "
                     "all keeps them)", self.path, f"{seen.dropped:,}")

    def _file_columns(self, path: Path) -> list[str]:
        if _kind(path) == "parquet":
            try:
                names = pq.read_schema(path).names
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        else:
            with _unpacked(path) as f:
                header = f.readline()
            try:  # utf-8-sig: a byte-order mark before the header is not part of the first name
                names = [c.strip().strip('"') for c in header.decode("utf-8-sig").rstrip("\r\n").split(",")]
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line 1: the header is not valid UTF-8") from exc
        if _kind(path) == "parquet":
            check_id_types(pq.read_schema(path), path)
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            where = f"{path}, line 1" if _kind(path) == "csv" else str(path)
            raise DataError(f"{where}: column {repeated[0]!r} appears twice in the header; expected each column once")
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {names}, expected {list(REQUIRED)} "
                            f"and optionally {[c for c in KNOWN if c not in REQUIRED]}")
        return names

    def _read(self, path: Path, names: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
        if _kind(path) == "parquet":
            wanted = [c for c in names if c in KNOWN]
            yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=wanted)
            return
        layout = Layout(
            tuple((c, KNOWN[c][1]) if c in KNOWN else (f"_{c}", pa.string()) for c in names),
            ",", header=True, quoting=True,
        )
        yield from read_delimited(functools.partial(_unpacked, path), layout, str(path))


def distinct_items(table: pa.Table) -> pa.Table:
    """(movie_id, movie_title) with the first title seen for each id other than the id itself (which stands in on
    a row without a title: ``_titles``), else the id."""
    ids = table.column("movie_id")
    titles = pc.if_else(pc.equal(table.column("movie_title"), ids), pa.scalar(None, pa.string()),
                        table.column("movie_title"))
    grouped = pa.table({"movie_id": ids, "movie_title": titles}).group_by("movie_id", use_threads=False).aggregate(
        [("movie_title", "first")])  # nulls skipped
    return pa.table({"movie_id": grouped.column("movie_id"),
                     "movie_title": pc.coalesce(grouped.column("movie_title_first"), grouped.column("movie_id"))})


def merge_items(parts: list[pa.Table]) -> pa.Table:
    """Folds per-chunk ``distinct_items`` results into one table sorted by id."""
    return distinct_items(pa.concat_tables(parts)).sort_by("movie_id")


def _kind(path: Path) -> str | None:
    """"csv" (compressed or not), "parquet", or None for a file this source does not read."""
    if path.name.lower().endswith(".parquet"):
        return "parquet"
    return "csv" if _csv_ending(path) is not None else None


def _csv_ending(path: Path) -> str | None:
    """The key of CSV_ENDINGS that ends the file's name (any case), or None."""
    name = path.name.lower()
    return next((ending for ending in CSV_ENDINGS if name.endswith(ending)), None)


def _refusing(name: str):
    """``_Unpacked``'s ``name`` method: io.BufferedReader's, with a stream that does not decompress refused."""
    def method(self, *args):
        try:
            return getattr(io.BufferedReader, name)(self, *args)
        except OSError as exc:
            raise DataError(f"{self._name}: not readable as {self._codec}-compressed text ({exc}); expected a "
                            f"whole {self._codec} file (a download cut short ends early)") from exc
    method.__name__ = name
    return method


class _Unpacked(io.BufferedReader):
    """A compressed CSV file's text as a binary stream; a stream that does not decompress raises DataError, from
    whichever call reads it."""

    def __init__(self, path: Path, codec: str):
        self._name, self._codec = path, codec
        super().__init__(pa.input_stream(str(path), compression=codec))

    read, read1, readline, readlines, readinto, readinto1, peek = map(
        _refusing, ("read", "read1", "readline", "readlines", "readinto", "readinto1", "peek"))

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _unpacked(path: Path):
    """The file's bytes, decompressed for a .csv.gz, .csv.bz2 or .csv.zst."""
    codec = CSV_ENDINGS.get(_csv_ending(path))
    return open(path, "rb") if codec is None else _Unpacked(path, codec)


def _row_of_chunk(path: Path, first_row: int, i: int) -> str:
    """How an error names row ``i`` of the chunk of ``path`` that starts at data row ``first_row``."""
    return _where(path, first_row + i)


def _where(path: Path, row: int) -> str:
    """How an error names data row ``row`` (0-based) of ``path``: its line in a CSV file, its row in Parquet."""
    if _kind(path) == "parquet":
        return f"{path}, row {row + 1}"
    with _unpacked(path) as f:  # the error path only: count the lines Arrow read (blank ones are skipped)
        next(f, None)
        line, data_rows = 1, -1
        for raw in f:
            line += 1
            if raw.strip(b"\r\n"):
                data_rows += 1
                if data_rows == row:
                    break
    return f"{path}, line {line}"


class _Pairs:
    """The (user, item) pairs seen so far (scaleout.data.pairs); ``first_of`` keeps the rows of a batch whose
    pair is new."""

    def __init__(self):
        self.users, self.items, self.kept = IdCodes(), IdCodes(), PairSet()
        self.dropped = 0

    def first_of(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        users = self.users.codes(batch.column("user_id"))
        items = self.items.codes(batch.column("movie_id"))
        for codes, what in ((self.users, "user"), (self.items, "item")):
            if codes.count > _MAX_CODE:
                raise DataError(f"{codes.count:,} distinct {what} ids: --repeated-pairs first keeps a pair as one "
                                f"int64 key, which numbers at most {_MAX_CODE:,}; expected fewer, or "
                                "--repeated-pairs all")
        keep = self.kept.first_new((users << 32) | items)
        self.dropped += batch.num_rows - len(keep)
        return batch.take(pa.array(keep)) if len(keep) < batch.num_rows else batch
