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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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
REQUIRED = ("user_id", "item_id")
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
                _text_ids(renamed, path, first_row)
                _whole_number_ids(renamed, path, first_row)
                _cast_values(renamed, path, first_row, text_way)
                _check_values(renamed, path, first_row)
                untitled += _titles(renamed, title, path, first_row)
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
            _check_id_types(pq.read_schema(path), path)
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


# file column of each checked value, for messages
_FILE_NAMES = {"user_id": "user_id", "movie_id": "item_id", "user_rating": "rating", "timestamp": "timestamp"}
# schema column -> (the type it is read as, what a value must be)
_VALUES = {"timestamp": (pa.int64(), "a whole number of seconds"), "user_rating": (pa.float32(), "a finite number")}
# what a timestamp column written as text must hold (_text_seconds)
_TEXT_TIMESTAMPS = ("a whole number of seconds or an ISO 8601 date and time (2020-01-31 12:30:00, with a zone or in "
                    "UTC), one way in every row")
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
# a float of each width holds every whole number below 2^bits exactly; 2^bits itself may be 2^bits + 1 rounded
EXACT_FLOAT_BITS = {16: 11, 32: 24, 64: 53}


# what an id column may be: text (bytes are read as UTF-8 text), integers, floats holding whole numbers, decimals
_ID_TYPES = "text (strings), integers, or floats or decimals holding whole numbers"


def _is_id_type(t: pa.DataType) -> bool:
    """Whether a Parquet id column of type ``t`` reads as ids (a column of nulls only is refused by row, as empty)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(is_(t) for is_ in (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view,
                                  pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view,
                                  pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_null))


def _check_id_types(schema: pa.Schema, path: Path) -> None:
    """A DataError, before any row is read, for a Parquet id column that cannot hold ids (a list, a struct, a bool,
    a timestamp...), where Arrow's cast to text failed with a traceback."""
    for name in REQUIRED:
        t = schema.field(name).type if name in schema.names else None
        if t is not None and not _is_id_type(t):
            raise DataError(f"{path}: column {name!r} is of type {t}; expected {_ID_TYPES}")


def _text_ids(columns: dict[str, pa.Array], path: Path, first_row: int) -> None:
    """Dictionary-encoded id columns decoded, byte (binary) ones read as UTF-8 text and decimal ones as the whole
    numbers they hold (1.00 is id "1", as an integer column gives it), in place: a DataError names the row of the
    first value that is not UTF-8, or not a whole number."""
    for name in ("user_id", "movie_id"):
        ids = columns[name]
        if pa.types.is_dictionary(ids.type):
            ids = ids.dictionary_decode()
        field = _FILE_NAMES[name]
        if pa.types.is_decimal(ids.type) and ids.type.scale:
            whole = {32: pa.decimal32, 64: pa.decimal64, 128: pa.decimal128, 256: pa.decimal256}[ids.type.bit_width]
            ids = _cast_by_row(ids, whole(ids.type.precision, 0), path, first_row, lambda v: (
                f"field {field!r} is {v.as_py()} in a {ids.type} column; expected whole numbers (ids written as "
                "decimals), or a string or integer column"))
        if _is_bytes(ids.type):
            ids = _utf8(ids, path, first_row, field, "ids written as UTF-8")
        columns[name] = ids


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _utf8(values: pa.Array, path: Path, first_row: int, field: str, expected: str) -> pa.Array:
    """``values`` (bytes) as UTF-8 text; a DataError names the row of the first that is not."""
    return _cast_by_row(values, pa.string(), path, first_row,
                        lambda v: f"field {field!r} is the bytes {v.as_py()!r}, which are not UTF-8 text; expected "
                                  f"{expected}")


def _cast_by_row(values: pa.Array, to: pa.DataType, path: Path, first_row: int, said) -> pa.Array:
    """``values`` cast to ``to``; where one does not cast, a DataError naming its row (of the file ``path``, whose
    chunk starts at ``first_row``) with ``said(value)``."""
    cast = functools.partial(pa.Array.cast, target_type=to)
    try:
        return cast(values)
    except pa.ArrowInvalid as exc:
        i = _first_uncast(values, cast)
        raise DataError(f"{_where(path, first_row + i)}: {said(values[i])}") from exc


def _titles(columns: dict[str, pa.Array], title: str | None, path: Path, first_row: int) -> int:
    """The item title column (file column ``title``; None: there is none) as text, in place: bytes read as UTF-8 (a
    DataError names the row of the first that is not), numbers as written, and an empty or blank title, or none,
    the item id. Another type (a list, a struct) is refused naming the column. How many rows had a title column but
    no title in it."""
    ids = columns["movie_id"].cast(pa.string())
    if title is None:
        columns["movie_title"] = ids
        return 0
    titles = columns["movie_title"]
    if pa.types.is_dictionary(titles.type):
        titles = titles.dictionary_decode()
    if _is_bytes(titles.type):
        titles = _utf8(titles, path, first_row, title, "a title written as UTF-8")
    try:
        titles = titles.cast(pa.string())
    except pa.ArrowNotImplementedError as exc:
        raise DataError(f"{path}: column {title!r} is of type {titles.type}; expected text (an item's title)") from exc
    empty = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(titles)), 0), True)
    columns["movie_title"] = pc.if_else(empty, ids, titles)
    return int(pc.sum(empty).as_py() or 0)


def _whole_number_ids(columns: dict[str, pa.Array], path: Path, first_row: int) -> None:
    """Float id columns (pandas writes an integer column as float64 once it held a missing value) read as the
    whole numbers they hold, so 2.0 is user "2", as an int64 column gives it, not "2.0"; in place. A DataError
    names the row of the first value that is not a whole number below 2^53 (2^24 in float32), beyond which a float
    holds ids only approximately (a NaN: the id is missing)."""
    for name in ("user_id", "movie_id"):
        ids = columns[name]
        if not pa.types.is_floating(ids.type):
            continue
        bits = EXACT_FLOAT_BITS[ids.type.bit_width]
        values = ids.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls: NaN
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0 ** bits))
        if bad.any():
            i = int(np.argmax(bad))
            value = "empty or NaN" if np.isnan(values[i]) else repr(float(values[i]))
            raise DataError(f"{_where(path, first_row + i)}: field {_FILE_NAMES[name]!r} is {value} in a "
                            f"float{ids.type.bit_width} column; expected whole numbers (ids written as floats) below "
                            f"2^{bits} in size, where such a float holds each one exactly, or a string or integer column")
        columns[name] = pa.array(values.astype(np.int64))


def _cast_values(columns: dict[str, pa.Array], path: Path, first_row: int, text_way: dict) -> None:
    """The timestamp and the rating cast to their types, in place: a DataError names the row of the first value
    that does not cast (a string that is not a number, a fraction of a second). A Parquet timestamp or date
    column is read as seconds since the epoch (UTC; below a second dropped), not in its own unit. A timestamp
    column written as text is read the way its file's first value is written (``_text_seconds``, kept in
    ``text_way`` across the file's chunks)."""
    for name, (to, expected) in _VALUES.items():
        if name not in columns:
            continue
        column = columns[name]
        if name == "timestamp" and pa.types.is_boolean(column.type):  # Arrow would cast it to 0 and 1
            raise DataError(f"{path}: column 'timestamp' is of type bool; expected {expected} in each row")
        if name == "timestamp" and (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)):
            column = column.cast(pa.timestamp("s"), safe=False)
        text = name == "timestamp" and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))
        if text:
            if name not in text_way:
                text_way[name] = _text_seconds(column)
            cast = text_way[name]
            expected = f"{_TEXT_TIMESTAMPS}; this file's first is {_WAYS[cast]}"
        else:
            cast = functools.partial(pa.Array.cast, target_type=to)
        try:
            columns[name] = cast(column)
            continue
        except pa.ArrowNotImplementedError as exc:
            raise DataError(f"{path}: column {_FILE_NAMES[name]!r} is of type {column.type}; expected {expected} "
                            "in each row") from exc
        except pa.ArrowInvalid as exc:
            i = _first_uncast(column, cast)
            raise DataError(f"{_where(path, first_row + i)}: field {_FILE_NAMES[name]!r} is "
                            f"{column[i].as_py()!r}; expected {expected}") from exc


def _text_seconds(text: pa.Array):
    """The cast of a timestamp column written as text: ``_iso_seconds`` where its first value that is not blank
    starts as an ISO 8601 date does (2020-01-31), ``_whole_seconds`` otherwise; a row written the other way, in
    this chunk or a later one of the same file, is then refused by line."""
    values = pc.drop_null(_trimmed(text))
    iso = len(values) and pc.match_substring_regex(values[:1], _ISO_DATE)[0].as_py()
    return _iso_seconds if iso else _whole_seconds


def _trimmed(text: pa.Array) -> pa.Array:
    """Each value of ``text`` without its outer whitespace; one left empty null."""
    text = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)


def _iso_seconds(text: pa.Array) -> pa.Array:
    """ISO 8601 dates and times as int64 seconds since the epoch: a value with a zone (Z, +02:00, -0500) in it, one
    without it in UTC, a date alone at midnight, below a second dropped (as a Parquet timestamp column is read); an
    empty value null. ArrowInvalid for anything else (a date that does not exist, a year outside 1677-2262)."""
    text = pc.replace_substring_regex(_trimmed(text), r"^(\d{4}-\d{2}-\d{2})$", r"\1T00:00:00")
    zoned = pc.if_else(pc.match_substring_regex(text, r"(Z|[+-]\d{2}(:?\d{2})?)$"), text,
                       pc.binary_join_element_wise(text, "Z", ""))
    return zoned.cast(pa.timestamp("ns", "UTC")).cast(pa.timestamp("s", "UTC"), safe=False).cast(pa.int64())


def _whole_seconds(text: pa.Array) -> pa.Array:
    """Timestamps written as text (a CSV file's, or a Parquet string column) as int64 seconds: each value trimmed,
    an empty one null (refused as empty by _check_values), a whole number with a point and zeros after it read as
    that number ('978300760.0', as pandas writes an integer column that has a gap). ArrowInvalid for anything else:
    a fraction of a second, as in a float column, a number out of int64's range, 'nan' or words."""
    text = _trimmed(text)
    try:
        return text.cast(pa.int64())
    except pa.ArrowInvalid:  # exact: the zeros are cut from the text, never read through a float
        return pc.replace_substring_regex(text, r"\.0*$", "").cast(pa.int64())


_WAYS = {_iso_seconds: "a date and time", _whole_seconds: "a number of seconds"}


def _first_uncast(column: pa.Array, cast) -> int:
    """The index of the first value of ``column`` that ``cast`` (a function of an array, raising ArrowInvalid)
    does not cast (one does not): halves of the unsettled part cast in turn, so the whole column is cast about
    twice."""
    lo, hi = 0, len(column)  # column[:lo] casts; the first failure is before hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            cast(column.slice(lo, mid - lo))
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def _check_values(columns: dict[str, pa.Array], path: Path, first_row: int) -> None:
    """DataError naming the line (CSV) or row (Parquet) of the first empty id or timestamp, or non-finite
    rating."""
    for name in ("user_id", "movie_id"):
        ids = columns[name].cast(pa.string())
        blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0), True)
        if pc.any(blank).as_py():
            row = first_row + pc.index(blank, True).as_py()
            raise DataError(f"{_where(path, row)}: field {_FILE_NAMES[name]!r} is empty; every interaction needs one")
    if "timestamp" in columns and columns["timestamp"].null_count:
        i = pc.index(pc.is_null(columns["timestamp"]), True).as_py()
        raise DataError(f"{_where(path, first_row + i)}: field 'timestamp' is empty; expected a whole number of "
                        "seconds in every row (or no timestamp column)")
    if "user_rating" in columns:
        ratings = columns["user_rating"].cast(pa.float64())
        bad = pc.fill_null(pc.invert(pc.is_finite(ratings)), True)  # Arrow reads "nan", "NA", "" as null
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            value = ratings[i].as_py()
            raise DataError(f"{_where(path, first_row + i)}: field 'rating' is "
                            f"{'empty or NaN' if value is None else repr(value)}; expected a finite number")


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
