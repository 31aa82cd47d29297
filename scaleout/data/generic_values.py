"""A generic file's columns read as the schema's types; a value that does not read is refused by its line or row.

Ids: text, integers, whole-number floats and decimals, bytes as UTF-8 (another column type refused before any
row is read); timestamps: whole seconds or ISO 8601 text, one way in a file, or a Parquet timestamp or date
column; ratings: finite numbers; titles: text, the item id where one is empty. ``where(i)`` names row ``i`` of
the chunk being read: its line in a CSV file, its row in Parquet (``scaleout.data.generic``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaleout.errors import DataError

Where = Callable[[int], str]
REQUIRED = ("user_id", "item_id")


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


def check_id_types(schema: pa.Schema, path: Path) -> None:
    """A DataError, before any row is read, for a Parquet id column that cannot hold ids (a list, a struct, a bool,
    a timestamp...), where Arrow's cast to text failed with a traceback."""
    for name in REQUIRED:
        t = schema.field(name).type if name in schema.names else None
        if t is not None and not _is_id_type(t):
            raise DataError(f"{path}: column {name!r} is of type {t}; expected {_ID_TYPES}")


def text_ids(columns: dict[str, pa.Array], where: Where) -> None:
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
            ids = _cast_by_row(ids, whole(ids.type.precision, 0), where, lambda v: (
                f"field {field!r} is {v.as_py()} in a {ids.type} column; expected whole numbers (ids written as "
                "decimals), or a string or integer column"))
        if _is_bytes(ids.type):
            ids = _utf8(ids, where, field, "ids written as UTF-8")
        columns[name] = ids


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _utf8(values: pa.Array, where: Where, field: str, expected: str) -> pa.Array:
    """``values`` (bytes) as UTF-8 text; a DataError names the row of the first that is not."""
    return _cast_by_row(values, pa.string(), where,
                        lambda v: f"field {field!r} is the bytes {v.as_py()!r}, which are not UTF-8 text; expected "
                                  f"{expected}")


def _cast_by_row(values: pa.Array, to: pa.DataType, where: Where, said) -> pa.Array:
    """``values`` cast to ``to``; where one does not cast, a DataError naming its row (``where``) with
    ``said(value)``."""
    cast = functools.partial(pa.Array.cast, target_type=to)
    try:
        return cast(values)
    except pa.ArrowInvalid as exc:
        i = first_uncast(values, cast)
        raise DataError(f"{where(i)}: {said(values[i])}") from exc


def titles_as_text(columns: dict[str, pa.Array], title: str | None, path: Path, where: Where) -> int:
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
        titles = _utf8(titles, where, title, "a title written as UTF-8")
    try:
        titles = titles.cast(pa.string())
    except pa.ArrowNotImplementedError as exc:
        raise DataError(f"{path}: column {title!r} is of type {titles.type}; expected text (an item's title)") from exc
    empty = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(titles)), 0), True)
    columns["movie_title"] = pc.if_else(empty, ids, titles)
    return int(pc.sum(empty).as_py() or 0)


def whole_number_ids(columns: dict[str, pa.Array], where: Where) -> None:
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
            raise DataError(f"{where(i)}: field {_FILE_NAMES[name]!r} is {value} in a "
                            f"float{ids.type.bit_width} column; expected whole numbers (ids written as floats) below "
                            f"2^{bits} in size, where such a float holds each one exactly, or a string or integer "
                            "column")
        columns[name] = pa.array(values.astype(np.int64))


def cast_values(columns: dict[str, pa.Array], path: Path, where: Where, text_way: dict) -> None:
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
            i = first_uncast(column, cast)
            raise DataError(f"{where(i)}: field {_FILE_NAMES[name]!r} is "
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
    an empty one null (refused as empty by check_values), a whole number with a point and zeros after it read as
    that number ('978300760.0', as pandas writes an integer column that has a gap). ArrowInvalid for anything else:
    a fraction of a second, as in a float column, a number out of int64's range, 'nan' or words."""
    text = _trimmed(text)
    try:
        return text.cast(pa.int64())
    except pa.ArrowInvalid:  # exact: the zeros are cut from the text, never read through a float
        return pc.replace_substring_regex(text, r"\.0*$", "").cast(pa.int64())


_WAYS = {_iso_seconds: "a date and time", _whole_seconds: "a number of seconds"}


def first_uncast(column: pa.Array, cast) -> int:
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


def check_values(columns: dict[str, pa.Array], where: Where) -> None:
    """DataError naming the line (CSV) or row (Parquet) of the first empty id or timestamp, or non-finite
    rating."""
    for name in ("user_id", "movie_id"):
        ids = columns[name].cast(pa.string())
        blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0), True)
        if pc.any(blank).as_py():
            row = pc.index(blank, True).as_py()
            raise DataError(f"{where(row)}: field {_FILE_NAMES[name]!r} is empty; every interaction needs one")
    if "timestamp" in columns and columns["timestamp"].null_count:
        i = pc.index(pc.is_null(columns["timestamp"]), True).as_py()
        raise DataError(f"{where(i)}: field 'timestamp' is empty; expected a whole number of "
                        "seconds in every row (or no timestamp column)")
    if "user_rating" in columns:
        ratings = columns["user_rating"].cast(pa.float64())
        bad = pc.fill_null(pc.invert(pc.is_finite(ratings)), True)  # Arrow reads "nan", "NA", "" as null
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            value = ratings[i].as_py()
            raise DataError(f"{where(i)}: field 'rating' is "
                            f"{'empty or NaN' if value is None else repr(value)}; expected a finite number")
