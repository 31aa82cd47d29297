"""The side features of the towers, coded once from a prepared dataset (NumPy only, no TensorFlow).

Query tower (per user, from users.parquet, and per interaction):
  age         bucketized_user_age, one code per bucket
  gender      user_gender
  occupation  user_occupation_label
  zip         the first ``ZIP_PREFIX`` characters of user_zip_code
  timestamp   the interaction's timestamp, bucketised on training quantiles and
              normalised; where a caller gives none (serving a raw user id), the
              user's latest training timestamp stands in
Candidate tower (per candidate, from candidates.parquet):
  genres      movie_genres, a list pooled by mean
  title       the words of movie_title (lower-cased, split on non-alphanumerics,
              words of at least two titles), pooled by mean
Both towers, with ``ModelConfig.ials_weight``:
  iALS factors  implicit's ALS fitted once on the training split: each user's and
              each candidate's factors (scaleout.train.ials.factor_tables)

Every coded table has one row per vocabulary entry plus row 0 for ids outside
the vocabulary, and code 0 for "missing" (and list padding). A feature the
dataset lacks, or whose values are all missing, is left out with a note saying
why; it is never filled with a placeholder.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaleout.config import QUERY_FEATURES
from scaleout.names import MOVIE_ID, MOVIE_TITLE, USER_ID
from scaleout.train.ials import factor_tables

log = logging.getLogger(__name__)

USER_COLUMNS = {"age": "bucketized_user_age", "gender": "user_gender", "occupation": "user_occupation_label",
                "zip": "user_zip_code"}
ZIP_PREFIX = 3
TITLE_WORDS = 16
TITLE_MIN_COUNT = 2
TIMESTAMP_BUCKETS = 100
TIMESTAMP_SAMPLE = 1_000_000


@dataclass
class CodedFeature:
    """``codes[row]``: the codes of one vocabulary row (row 0: unknown id); 1..size are values, 0 missing."""

    name: str
    codes: np.ndarray  # [rows + 1, width] int32
    size: int

    @property
    def pooled(self) -> bool:
        return self.codes.shape[1] > 1


@dataclass
class Timestamps:
    """Bucket boundaries and moments of the training timestamps; each user's latest one (row 0: the latest overall)."""

    boundaries: np.ndarray  # [TIMESTAMP_BUCKETS - 1] float64
    mean: float
    std: float
    user_last: np.ndarray  # [users + 1] float64


@dataclass
class FeatureTables:
    query: list[CodedFeature] = field(default_factory=list)
    candidate: list[CodedFeature] = field(default_factory=list)
    timestamp: Timestamps | None = None
    left_out: dict[str, str] = field(default_factory=dict)
    # [users + 1, length] int32: each user's most recent training items as candidate rows + 1 (the rows of the
    # candidate tower's StringLookup), oldest first, 0 padding; row 0 (unknown users) empty
    history: np.ndarray | None = None
    # [users + 1, factors] and [candidates + 1, factors] float32: iALS's user and item factors by StringLookup row
    # (scaleout.train.ials.factor_tables; row 0: the users' mean, and zeros)
    ials_users: np.ndarray | None = None
    ials_items: np.ndarray | None = None

    @property
    def used(self) -> list[str]:
        timestamp = ["timestamp"] if self.timestamp else []
        history = [f"history ({self.history.shape[1]} items)"] if self.history is not None else []
        ials = [f"iALS factors ({self.ials_items.shape[1]})"] if self.ials_items is not None else []
        return [f.name for f in self.query] + timestamp + history + [f.name for f in self.candidate] + ials


def _code(values: list) -> tuple[np.ndarray, int]:
    """Codes 1..n for the distinct non-missing values (sorted), 0 for missing; with row 0 prepended."""
    distinct = sorted({v for v in values if v is not None and v != ""})
    at = {v: i + 1 for i, v in enumerate(distinct)}
    codes = np.array([0] + [at.get(v, 0) for v in values], np.int32)[:, None]
    return codes, len(distinct)


def _code_lists(lists: list[list[str] | None], width: int, keep: set[str] | None = None) -> tuple[np.ndarray, int]:
    """Each row's list as up to ``width`` codes, padded with 0; only values in ``keep`` when given."""
    distinct = sorted({v for vs in lists if vs for v in vs if keep is None or v in keep})
    at = {v: i + 1 for i, v in enumerate(distinct)}
    codes = np.zeros((len(lists) + 1, width), np.int32)
    for row, vs in enumerate(lists, start=1):
        kept = [at[v] for v in (vs or []) if v in at][:width]
        codes[row, :len(kept)] = kept
    return codes, len(distinct)


def title_words(title: str | None) -> list[str]:
    return re.findall(r"[a-z0-9]+", (title or "").lower())


def timestamp_table(train_files, users: pa.Table) -> Timestamps:
    """Quantile boundaries and moments from up to TIMESTAMP_SAMPLE training timestamps (whole row groups)."""
    parts, n = [], 0
    for path in train_files:
        reader = pq.ParquetFile(path)
        for group in range(reader.num_row_groups):
            if n >= TIMESTAMP_SAMPLE:
                break
            column = reader.read_row_group(group, columns=["timestamp"]).column("timestamp")
            parts.append(column.drop_null().to_numpy().astype(np.float64))
            n += len(parts[-1])
    sample = np.concatenate(parts)
    boundaries = np.unique(np.quantile(sample, np.linspace(0, 1, TIMESTAMP_BUCKETS + 1)[1:-1]))
    last = users.column("last_timestamp").to_numpy(zero_copy_only=False).astype(np.float64)
    last = np.nan_to_num(last, nan=float(sample.max()))
    return Timestamps(boundaries, float(sample.mean()), float(sample.std() or 1.0),
                      np.concatenate([[sample.max()], last]))


def training_rows(dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training interaction whose user is in the vocabulary and item among the candidates: (user rows + 1
    int64, candidate rows + 1 int32, timestamps int64, 0 where the data has none), in file order."""
    users = dataset.vocabulary(USER_ID)
    candidates = dataset.candidates.column(MOVIE_ID)
    columns = [USER_ID, MOVIE_ID] + (["timestamp"] if "timestamp" in dataset.columns else [])
    table = pa.concat_tables(pq.read_table(f, columns=columns) for f in dataset.files("train"))
    user_row = pc.index_in(table.column(USER_ID), value_set=pa.array(users))
    item_row = pc.index_in(table.column(MOVIE_ID), value_set=candidates)
    keep = pc.and_(pc.is_valid(user_row), pc.is_valid(item_row))
    u = pc.filter(user_row, keep).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    i = pc.filter(item_row, keep).to_numpy(zero_copy_only=False).astype(np.int32) + 1
    when = (pc.filter(table.column("timestamp"), keep).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            if "timestamp" in columns else np.zeros(len(u), np.int64))
    return u, i, when


def history_table(dataset, length: int, rows: tuple | None = None) -> np.ndarray:
    """Every user's ``length`` most recent distinct training items (by timestamp where the data has one, else
    in file order), coded as candidate rows + 1, oldest first and padded with 0 on the right. Row 0 is the
    unknown user's: empty. Items outside the candidates are left out. ``rows``: ``training_rows``, read already."""
    n_users, n_candidates = len(dataset.vocabulary(USER_ID)), dataset.candidates.num_rows
    u, i, when = rows if rows is not None else training_rows(dataset)
    order = np.lexsort((np.arange(len(u)), when, u))  # by user, then time, then file order
    u, i = u[order], i[order]
    # one row per (user, item): its latest interaction
    _, latest = np.unique((u * (n_candidates + 1) + i)[::-1], return_index=True)
    last = np.zeros(len(u), bool)
    last[len(u) - 1 - latest] = True
    u, i = u[last], i[last]
    counts = np.bincount(u, minlength=n_users + 1)
    end = np.cumsum(counts)
    position = np.arange(len(u)) - (end - counts)[u]  # place among the user's items, oldest first
    keep_from = np.maximum(counts - length, 0)[u]
    recent = position >= keep_from
    codes = np.zeros((n_users + 1, length), np.int32)
    codes[u[recent], (position - keep_from)[recent]] = i[recent]
    return codes


def build_tables(dataset, wanted: tuple[str, ...], history: int = 0, ials: dict | None = None) -> FeatureTables:
    """The coded tables of the ``wanted`` features that ``dataset`` has; notes for the others. ``history``: each
    user's most recent items (``history_table``); ``ials``: iALS's setting, whose factors are fitted on the
    training split (``ModelConfig.ials``)."""
    tables = FeatureTables()
    users = dataset.users
    user_vocab = dataset.vocabulary(USER_ID)
    for name in (n for n in QUERY_FEATURES if n in wanted):
        column = "last_timestamp" if name == "timestamp" else USER_COLUMNS[name]
        if users is None:
            tables.left_out[name] = f"{dataset.path} has no users.parquet (prepared by an older scaleout)"
            continue
        if column not in users.column_names or users.column(column).null_count == users.num_rows:
            tables.left_out[name] = f"the dataset has no {column!r} values"
            continue
        order = users.column(USER_ID).to_numpy(zero_copy_only=False).astype(str)
        if len(order) != len(user_vocab) or (order != user_vocab).any():
            tables.left_out[name] = "users.parquet is not in the user vocabulary's order"
            continue
        if name == "timestamp":
            tables.timestamp = timestamp_table(dataset.files("train"), users)
            continue
        values = users.column(column).to_pylist()
        if name == "zip":
            values = [None if v is None else str(v)[:ZIP_PREFIX] for v in values]
        codes, size = _code(values)
        tables.query.append(CodedFeature(name, codes, size))
    candidates = dataset.candidates
    if "genres" in wanted:
        if "movie_genres" not in candidates.column_names or pc.sum(pc.list_value_length(
                candidates.column("movie_genres"))).as_py() in (None, 0):
            tables.left_out["genres"] = "the candidates have no movie_genres"
        else:
            lists = candidates.column("movie_genres").to_pylist()
            codes, size = _code_lists(lists, max(len(v or []) for v in lists))
            tables.candidate.append(CodedFeature("genres", codes, size))
    if "title" in wanted:
        words = [title_words(t) for t in candidates.column(MOVIE_TITLE).to_pylist()]
        counts: dict[str, int] = {}
        for ws in words:
            for w in set(ws):
                counts[w] = counts.get(w, 0) + 1
        keep = {w for w, c in counts.items() if c >= TITLE_MIN_COUNT}
        if not keep:
            tables.left_out["title"] = f"no title word appears in {TITLE_MIN_COUNT} or more titles"
        else:
            codes, size = _code_lists(words, TITLE_WORDS, keep)
            tables.candidate.append(CodedFeature("title", codes, size))
    rows = training_rows(dataset) if history or ials else None
    if history:
        tables.history = history_table(dataset, history, rows)
    if ials:
        start = time.monotonic()
        tables.ials_users, tables.ials_items = factor_tables(rows[0] - 1, rows[1] - 1, len(user_vocab),
                                                             candidates.num_rows, ials)
        log.info("iALS %s fitted on %s training interactions in %.1f s", ials, f"{len(rows[0]):,}",
                 time.monotonic() - start)
    for name, why in tables.left_out.items():
        log.warning("feature %r left out: %s", name, why)
    return tables
