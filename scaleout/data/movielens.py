"""MovieLens in its original files: a directory or the zip GroupLens publishes.

Three layouts, found by the files present:
  100K: u.data (tab), u.item ('|', latin-1, 19 genre flags), u.user ('|')
  1M:   ratings.dat, movies.dat, users.dat ('::', latin-1)
  20M, 25M, latest: ratings.csv, movies.csv (CSV with header, UTF-8)

Fields, spellings and derived values (genre names, age buckets, occupation
labels) follow TFDS's ``movielens_parsing`` so that both sources agree.
"""

from __future__ import annotations

import functools
import io
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaleout.data.schema import conform, interaction_schema
from scaleout.data.text import Files, Layout, read_delimited
from scaleout.errors import DataError

# u.item's 19 genre flags in file order; "Children's" spelled as TFDS does.
GENRES_100K = (
    "Unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
AGE_THRESHOLDS_100K = (18, 25, 35, 45, 50, 56)
# 100K occupation -> the label shared with 1M (TFDS's conversion map).
OCCUPATION_LABELS_100K = {
    "administrator": "clerical/admin", "artist": "artist", "doctor": "doctor/health care",
    "educator": "academic/educator", "engineer": "technician/engineer",
    "entertainment": "entertainment", "executive": "executive/managerial",
    "healthcare": "doctor/health care", "homemaker": "homemaker", "lawyer": "lawyer",
    "librarian": "librarian", "marketing": "sales/marketing", "none": "other/not specified",
    "other": "other/not specified", "programmer": "programmer", "retired": "retired",
    "salesman": "sales/marketing", "scientist": "scientist", "student": "student",
    "technician": "technician/engineer", "writer": "writer",
}
OCCUPATIONS_1M = (
    "other/not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)

LAYOUTS = {
    "100k": ("u.data", "u.item", "u.user"),
    "1m": ("ratings.dat", "movies.dat", "users.dat"),
    "current": ("ratings.csv", "movies.csv"),
}

_S, _I, _F = pa.string(), pa.int64(), pa.float32()
_RATINGS_100K = Layout((("user_id", _S), ("movie_id", _S), ("user_rating", _F), ("timestamp", _I)), "\t")
_ITEMS_100K = Layout(
    (("movie_id", _S), ("movie_title", _S), ("_release", _S), ("_video_release", _S), ("_url", _S))
    + tuple((f"g{i}", pa.int8()) for i in range(len(GENRES_100K))),
    "|",
    encoding="latin-1",
)
_USERS_100K = Layout((("user_id", _S), ("age", _I), ("gender", _S), ("occupation", _S), ("zip", _S)), "|")
# 1M's '::' separator is rewritten to one byte before Arrow reads it (Arrow's
# delimiter is a single character, and titles contain single colons).
_SEP_1M = "\x1f"
_RATINGS_1M = Layout((("user_id", _S), ("movie_id", _S), ("user_rating", _F), ("timestamp", _I)), _SEP_1M, "latin-1",
                     shown_delimiter="::")
_ITEMS_1M = Layout((("movie_id", _S), ("movie_title", _S), ("genres", _S)), _SEP_1M, "latin-1", shown_delimiter="::")
_USERS_1M = Layout((("user_id", _S), ("gender", _S), ("age", _I), ("occupation", _I), ("zip", _S)), _SEP_1M,
                   "latin-1", shown_delimiter="::")
_RATINGS_CSV = Layout(
    (("user_id", _S), ("movie_id", _S), ("user_rating", _F), ("timestamp", _I)), ",", header=True, quoting=True
)
_ITEMS_CSV = Layout((("movie_id", _S), ("movie_title", _S), ("genres", _S)), ",", header=True, quoting=True)


def detect_layout(files: Files) -> str:
    for name, required in LAYOUTS.items():
        if files.exists(required[0]):
            missing = [f for f in required if not files.exists(f)]
            if missing:
                raise DataError(f"{files.path}: has {required[0]} but not {missing}; a MovieLens {name} directory needs {list(required)}")
            return name
    expected = "; ".join(f"{k}: {', '.join(v)}" for k, v in LAYOUTS.items())
    raise DataError(f"{files.path}: not a MovieLens directory or zip; expected the files of one of ({expected})")


class MovieLensFiles:
    """A source over a local MovieLens directory or zip (see module doc)."""

    name = "movielens"

    def __init__(self, path: str):
        self.files = Files(path)
        self.layout = detect_layout(self.files)
        self._items: pa.Table | None = None
        self._users: pa.Table | None = None

    def describe(self) -> dict:
        return {"source": self.name, "path": str(self.files.path), "layout": self.layout}

    @property
    def columns(self) -> tuple[str, ...]:
        base = ("user_id", "movie_id", "movie_title", "user_rating", "timestamp", "movie_genres")
        if self.layout == "100k":
            return base + ("bucketized_user_age", "raw_user_age", "user_gender", "user_occupation_label",
                           "user_occupation_text", "user_zip_code")
        if self.layout == "1m":
            return base + ("bucketized_user_age", "user_gender", "user_occupation_label",
                           "user_occupation_text", "user_zip_code")
        return base

    # -- candidates -------------------------------------------------------
    def items(self) -> pa.Table:
        """One row per movie: movie_id, movie_title, movie_genres (list of names)."""
        if self._items is None:
            self._items = _unique_ids(self._read_items(), "movie_id", self._items_file())
        return self._items

    def _items_file(self) -> str:
        return LAYOUTS[self.layout][1]

    def _read_items(self) -> pa.Table:
        name = self._items_file()
        if self.layout == "100k":
            table = self._table(name, _ITEMS_100K)
            flags = np.stack([table.column(f"g{i}").to_numpy() for i in range(len(GENRES_100K))], axis=1)
            genres = pa.array([[GENRES_100K[j] for j in np.flatnonzero(row)] for row in flags], pa.list_(_S))
        else:
            table = self._table(name, _ITEMS_1M if self.layout == "1m" else _ITEMS_CSV)
            genres = pc.split_pattern(table.column("genres").combine_chunks(), "|")
            if self.layout == "1m":
                # 1M spells the genre "Children's"; TFDS (and 100K here) use "Children".
                names = pc.replace_substring_regex(genres.values, "^Children's$", "Children")
                genres = pa.ListArray.from_arrays(genres.offsets, names)
        return pa.table({"movie_id": table.column("movie_id"), "movie_title": table.column("movie_title"),
                         "movie_genres": genres})

    # -- users --------------------------------------------------------------
    def _user_features(self) -> pa.Table | None:
        if self.layout == "current":
            return None
        if self._users is None:
            if self.layout == "100k":
                t = self._table("u.user", _USERS_100K)
                age = t.column("age").to_numpy()
                buckets = np.ones(len(age), dtype=np.float32)
                for threshold in AGE_THRESHOLDS_100K:
                    buckets[age >= threshold] = threshold
                occupation = t.column("occupation").to_pylist()
                unknown = sorted(set(occupation) - set(OCCUPATION_LABELS_100K))
                if unknown:
                    raise DataError(f"{self.files.where('u.user')}: unknown occupation(s) {unknown}; expected one of u.occupation's")
                users = pa.table({
                    "user_id": t.column("user_id"),
                    "bucketized_user_age": pa.array(buckets, _F),
                    "raw_user_age": pc.cast(t.column("age"), _F),
                    "user_gender": pc.equal(t.column("gender"), "M"),
                    "user_occupation_label": pa.array([OCCUPATION_LABELS_100K[o] for o in occupation], _S),
                    "user_occupation_text": t.column("occupation"),
                    "user_zip_code": t.column("zip"),
                })
            else:
                t = self._table("users.dat", _USERS_1M)
                codes = t.column("occupation").to_numpy()
                if len(codes) and (codes.min() < 0 or codes.max() >= len(OCCUPATIONS_1M)):
                    bad = int(codes[(codes < 0) | (codes >= len(OCCUPATIONS_1M))][0])
                    raise DataError(f"{self.files.where('users.dat')}: occupation code {bad}; expected 0..{len(OCCUPATIONS_1M) - 1}")
                text = [OCCUPATIONS_1M[c] for c in codes]
                users = pa.table({
                    "user_id": t.column("user_id"),
                    "bucketized_user_age": pc.cast(t.column("age"), _F),
                    "user_gender": pc.equal(t.column("gender"), "M"),
                    # TFDS merges the two student occupations into one label.
                    "user_occupation_label": pa.array(
                        ["student" if o in ("K-12 student", "college/grad student") else o for o in text], _S),
                    "user_occupation_text": pa.array(text, _S),
                    "user_zip_code": t.column("zip"),
                })
            self._users = _unique_ids(users, "user_id", LAYOUTS[self.layout][2])
        return self._users

    # -- interactions ---------------------------------------------------------
    def interactions(self, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """Ratings joined with movie and user fields, in file order."""
        items, users = _arrays(self.items()), self._user_features()
        users = None if users is None else _arrays(users)
        schema = interaction_schema(self.columns)
        name = LAYOUTS[self.layout][0]
        where = self.files.where(name)
        layout = {"100k": _RATINGS_100K, "1m": _RATINGS_1M, "current": _RATINGS_CSV}[self.layout]
        first_line = 2 if layout.header else 1
        seen = 0
        for batch in read_delimited(self._opener(name), layout, where, block_size=_block_size(chunk_rows)):
            joined = {name: batch.column(name) for name in batch.schema.names}
            at = _lookup(batch.column("movie_id"), items["movie_id"], where, "movie_id",
                         self.files.where(self._items_file()), first_line + seen)
            for column in ("movie_title", "movie_genres"):
                joined[column] = items[column].take(at)
            if users is not None:
                at = _lookup(batch.column("user_id"), users["user_id"], where, "user_id",
                             self.files.where(LAYOUTS[self.layout][2]), first_line + seen)
                for column in list(users)[1:]:
                    joined[column] = users[column].take(at)
            seen += batch.num_rows
            yield conform(pa.RecordBatch.from_pydict(joined), schema, where)

    # -- helpers ----------------------------------------------------------------
    def _opener(self, name: str):
        if self.layout == "1m":
            return functools.partial(self._rewritten_1m, name)
        return functools.partial(self.files.open, name)

    def _rewritten_1m(self, name: str) -> io.BytesIO:
        # The 1M files are fixed in size (ratings.dat is 24 MB): rewriting them
        # in memory is simpler than a streaming '::' splitter.
        return io.BytesIO(self.files.read_bytes(name).replace(b"::", _SEP_1M.encode()))

    def _table(self, name: str, layout: Layout) -> pa.Table:
        batches = list(read_delimited(self._opener(name), layout, self.files.where(name)))
        if not batches:
            raise DataError(f"{self.files.where(name)}: the file holds no rows")
        return pa.Table.from_batches(batches)


def _unique_ids(table: pa.Table, key: str, where: str) -> pa.Table:
    table = table.combine_chunks()
    if pc.count_distinct(table.column(key)).as_py() != table.num_rows:
        counts = pc.value_counts(table.column(key))
        dup = next(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
        raise DataError(f"{where}: {key} {dup!r} appears more than once; expected one row per {key}")
    return table


def _arrays(table: pa.Table) -> dict[str, pa.Array]:
    return {name: table.column(name).combine_chunks() for name in table.schema.names}


def _lookup(keys: pa.Array, table_keys: pa.Array, where: str, field: str, table_where: str,
            first_line: int) -> pa.Array:
    """Row positions of ``keys`` in ``table_keys``; DataError naming the line of an unknown key."""
    at = pc.index_in(keys, value_set=table_keys)
    if at.null_count:
        i = pc.index(pc.is_null(at), True).as_py()
        raise DataError(f"{where}, line {first_line + i}: {field} {keys[i].as_py()!r} is not in {table_where}")
    return at


def _block_size(chunk_rows: int) -> int:
    # A MovieLens rating line is about 20-30 bytes.
    return max(1 << 16, min(chunk_rows * 24, 1 << 28))
