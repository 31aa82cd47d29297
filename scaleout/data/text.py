"""Delimited text files read with Arrow, with errors that name the line and field.

Arrow's CSV reader is fast and streams, but its errors name neither the line
nor the file ("CSV conversion error to float: invalid value 'x'"). When it
fails, ``read_delimited`` reads the same bytes once more in plain Python to
find the first bad line and says what was expected there. That second pass
runs only on the error path.
"""

from __future__ import annotations

import csv
import dataclasses
import zipfile
from pathlib import Path
from typing import IO, Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from scaleout.errors import DataError


class Files:
    """A directory or a zip archive of data files, addressed by base name.

    MovieLens zips hold one top-level folder (``ml-100k/u.data``); members are
    found by base name so either layout works.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or directory")
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise DataError(f"{self.path}: expected a directory or a .zip archive")
            self._zip = zipfile.ZipFile(self.path)
            for name in self._zip.namelist():
                if not name.endswith("/"):
                    self._members.setdefault(name.rsplit("/", 1)[-1], name)

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._members
        return (self.path / name).is_file()

    def where(self, name: str) -> str:
        """How errors name the file."""
        if self._zip is not None:
            return f"{self.path}:{self._members.get(name, name)}"
        return str(self.path / name)

    def open(self, name: str) -> IO[bytes]:
        if not self.exists(name):
            raise DataError(f"{self.where(name)}: file not found")
        if self._zip is not None:
            return self._zip.open(self._members[name])
        return open(self.path / name, "rb")

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one delimited file is laid out.

    columns: (name, Arrow type) for every field in file order; a field named
      with a leading underscore is read as text and dropped.
    header: the file's first line names the columns (CSV) and is skipped.
    quoting: fields may be double-quoted (CSV); MovieLens' '|' files are not.
    """

    columns: tuple[tuple[str, pa.DataType], ...]
    delimiter: str
    encoding: str = "utf-8"
    header: bool = False
    quoting: bool = False
    # How errors spell the separator when the file's own was rewritten before reading.
    shown_delimiter: str | None = None


def read_delimited(
    opener: Callable[[], IO[bytes]], layout: Layout, where: str, block_size: int = 16 << 20
) -> Iterator[pa.RecordBatch]:
    """Yields the file's rows as record batches with the layout's types.

    ``opener`` returns a new binary stream of the file each time it is called:
    the file is read a second time only to diagnose an error. Raises DataError
    naming ``where``, the line and the field on the first malformed row.
    """
    names = [name for name, _ in layout.columns]
    read_options = pacsv.ReadOptions(
        column_names=names,
        skip_rows=1 if layout.header else 0,
        encoding=layout.encoding,
        block_size=block_size,
    )
    parse_options = pacsv.ParseOptions(
        delimiter=layout.delimiter,
        quote_char='"' if layout.quoting else False,
        newlines_in_values=False,
    )
    convert_options = pacsv.ConvertOptions(
        column_types={name: (pa.string() if name.startswith("_") else t) for name, t in layout.columns},
        include_columns=[name for name in names if not name.startswith("_")],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        with opener() as data:
            reader = pacsv.open_csv(data, read_options, parse_options, convert_options)
            for batch in reader:
                yield batch
    except pa.ArrowInvalid as exc:
        with opener() as data:
            _diagnose(data, layout, where)
        raise DataError(f"{where}: {exc}") from exc


def _diagnose(data: IO[bytes], layout: Layout, where: str) -> None:
    """Raises DataError for the first line Arrow would reject, if one is found."""
    line_no = 0
    for raw in data:
        line_no += 1
        try:
            line = raw.decode(layout.encoding)
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}, line {line_no}: bytes that are not valid {layout.encoding} "
                            f"({exc.reason} at {exc.object[exc.start:exc.end]!r})") from None
        if line_no == 1 and layout.header:
            continue
        stripped = line.rstrip("\r\n")
        if not stripped:
            continue
        if layout.quoting:
            fields = next(csv.reader([stripped], delimiter=layout.delimiter))
        else:
            fields = stripped.split(layout.delimiter)
        if len(fields) != len(layout.columns):
            raise DataError(
                f"{where}, line {line_no}: expected {len(layout.columns)} fields separated by "
                f"{layout.shown_delimiter or layout.delimiter!r}, found {len(fields)}: "
                f"{stripped[:120].replace(layout.delimiter, layout.shown_delimiter or layout.delimiter)!r}"
            )
        for (name, dtype), value in zip(layout.columns, fields):
            if not _parses(value, dtype):
                label = name.lstrip("_")
                raise DataError(f"{where}, line {line_no}: field {label!r} is {value!r}; expected {_expected(dtype)}")


def _parses(value: str, dtype: pa.DataType) -> bool:
    try:
        if pa.types.is_integer(dtype):
            number = int(value)
            return dtype != pa.int64() or _INT_RANGE[0] <= number <= _INT_RANGE[1]
        if pa.types.is_floating(dtype):
            float(value)
    except ValueError:
        return False
    return True


_INT_RANGE = (-(1 << 63), (1 << 63) - 1)


def _expected(dtype: pa.DataType) -> str:
    if dtype == pa.int64():
        return f"an integer from {_INT_RANGE[0]:,} to {_INT_RANGE[1]:,}"
    if pa.types.is_integer(dtype):
        return "an integer"
    if pa.types.is_floating(dtype):
        return "a number"
    return str(dtype)
