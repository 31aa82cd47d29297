"""``scaleout prepare``: any source -> a sharded Parquet dataset directory.

Layout of the directory it writes (atomically: everything or nothing):

  train/part-00000.parquet ...   train interactions, shuffled within each chunk
  test/part-00000.parquet ...    test interactions
  candidates.parquet             one row per item: movie_id, movie_title,
                                 [movie_genres], train_count
  users.parquet                  one row per train user, in vocabulary order: user_id,
                                 the user columns the source has (first value
                                 seen), last_timestamp (latest train interaction)
  vocab/user_id.parquet          train users with their interaction counts
  vocab/movie_id.parquet         candidate ids with their train counts
  manifest.json                  settings, source, counts, schema, checksums
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaleout import __version__
from scaleout.config import DataConfig
from scaleout.data.dataset import MANIFEST, Dataset
from scaleout.data.generic import GenericInteractions, distinct_items, merge_items
from scaleout.data.keyhash import bucket_of
from scaleout.data.movielens import MovieLensFiles
from scaleout.data.order import vocabulary_order
from scaleout.data.synthetic import Synthetic
from scaleout.errors import DataError
from scaleout.fsutil import atomic_dir, checksums, utc_now, write_json
from scaleout.names import part_name

log = logging.getLogger(__name__)


def open_source(cfg: DataConfig):
    """The source object for ``cfg.source`` (see the modules of scaleout.data). A source whose
    ``items_by_construction`` is true draws every interaction's movie_id from its own items() (synthetic),
    so prepare does not check each chunk's ids against them (a hash set of every item per chunk: 0.4 s
    per million rows at 1M items)."""
    if cfg.source == "movielens":
        return MovieLensFiles(cfg.path)
    if cfg.source == "generic":
        return GenericInteractions(cfg.path, cfg.repeated_pairs)
    if cfg.source == "synthetic":
        return Synthetic(cfg)
    if cfg.source == "prepared":
        from scaleout.data.prepared_source import PreparedTrain

        return PreparedTrain(cfg.path)
    from scaleout.data.tfds_source import TfdsMovieLens  # imports TensorFlow

    return TfdsMovieLens(cfg.tfds_name, cfg.tfds_data_dir)


def rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Regroups ``batches`` into batches of exactly ``rows`` rows (the last may be shorter).

    The random split is drawn per chunk, so fixed chunk boundaries make it
    independent of how a reader happened to block its input.
    """
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        while size >= rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, rows).to_batches(max_chunksize=rows)[0]
            rest = table.slice(rows)
            pending, size = (rest.to_batches() if rest.num_rows else []), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


class ShardWriter:
    """Spreads rows evenly over ``shards`` Parquet files, written as rows arrive."""

    def __init__(self, directory: Path, shards: int, schema: pa.Schema, row_group_size: int):
        directory.mkdir(parents=True)
        self.row_group_size = row_group_size
        self.paths = [directory / part_name(i) for i in range(shards)]
        # Plain encoding, no dictionaries: of 4M synthetic rows at 10M users, written in 1.44 s against 3.06, read
        # in 0.26 s against 0.42, 45 MB against 60 (at ML-20M's 138k users 1.33 / 0.30 s / 38 MB against
        # 1.47 / 0.48 s / 46 MB); on small tables dictionaries still pay (ml-100k's files: 2.38 MB against 1.67).
        self.writers = [pq.ParquetWriter(p, schema, compression="zstd", use_dictionary=False) for p in self.paths]
        self.rows = [0] * shards
        self._next = 0

    def write(self, table: pa.Table) -> None:
        n = table.num_rows
        shards = len(self.writers)
        # Rotate which shard gets the remainder so shards stay within a row of each other.
        sizes = [n // shards + (1 if (i - self._next) % shards < n % shards else 0) for i in range(shards)]
        self._next = (self._next + n) % shards
        start = 0
        for i, size in enumerate(sizes):
            if size:
                self.writers[i].write_table(table.slice(start, size), row_group_size=self.row_group_size)
                self.rows[i] += size
                start += size

    def close(self) -> None:
        for w in self.writers:
            w.close()


USER_COLUMNS = ("bucketized_user_age", "raw_user_age", "user_gender", "user_occupation_label",
                "user_occupation_text", "user_zip_code")


FOLD_RATIO = 3  # pending rows per folded row before a fold (see _Folded)
PARTITION_AT = 1 << 20  # keys of a folded table before its group-by is split into buckets (see _Partitioned)
PARTITION_BITS = 8  # 256 buckets: 10M users in tables of about 40,000


class _Folded:
    """Per-chunk partial aggregates, folded into one table (``fold(concatenated) -> table``) once the pending
    rows outnumber ``ratio`` times the folded table's, and at the end. Folding every chunk into the whole table
    cost the table's size per chunk: quadratic where the keys grow with the data (100M interactions over 10M
    users: a 1M-row chunk took 4 s to add at the start and 8 s by 15M rows). Here a fold reads the table once
    for ``ratio`` times as many new rows, so once the keys stop growing each row is read about 1 + 1/ratio
    times (2 times at ratio 1, where the users' group-by took 82 of the 100M prepare's 334 s), and the pending
    parts never hold more than ``ratio`` times the table's rows plus one chunk's (on the order of the users,
    never of the interactions)."""

    def __init__(self, fold, ratio: float = FOLD_RATIO):
        self._fold = fold
        self.ratio = ratio
        self.table: pa.Table | None = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, part: pa.Table) -> None:
        self.pending.append(part)
        self.pending_rows += part.num_rows
        if self.pending_rows >= (0 if self.table is None else self.ratio * self.table.num_rows):
            self.fold()

    def fold(self) -> pa.Table | None:
        if self.pending:
            parts = ([] if self.table is None else [self.table]) + self.pending
            self.table = self._fold(pa.concat_tables(parts))  # in order: "first" stays the first seen
            self.pending, self.pending_rows = [], 0
        return self.table


class _Partitioned:
    """A _Folded group-by on ``key`` that, once its table holds ``at`` keys, splits into 2**``bits`` of them, one
    per bucket of a hash of the key (scaleout.data.keyhash): each row goes to its key's bucket, in order, so
    every bucket's table is the group-by of its keys and together they are the whole one. A hash table of
    millions of string keys is out of cache, a miss a row: the users of 40M synthetic rows at 100M's shape (10M
    users) took 24.6 s in one table and 20.0 s in 256 (means of three runs, the vocabulary's sort included; spreading
    the rows, a hash, a stable sort by bucket and a take, costs about 0.2 s a million rows), 64 or 1,024 did
    no better; a whole 100M prepare took 189.2 s against 225.1, its peak 1.88 GiB against 2.90. Below ``at``
    keys (ML-20M's 138,493 users, a catalogue of a million items) it stays one table and spends nothing on
    buckets."""

    def __init__(self, fold, key: str, at: int | None = None, bits: int | None = None):
        self._fold, self.key = fold, key
        self.at = PARTITION_AT if at is None else at
        self.bits = PARTITION_BITS if bits is None else bits
        self.whole: _Folded | None = _Folded(fold)
        self.buckets: list[_Folded] | None = None

    def add(self, part: pa.Table) -> None:
        if self.buckets is not None:
            for i, rows in self._spread(part):
                self.buckets[i].add(rows)
            return
        self.whole.add(part)
        if self.whole.table is not None and self.whole.table.num_rows >= self.at:
            self.buckets = [_Folded(self._fold) for _ in range(1 << self.bits)]
            for i, rows in self._spread(self.whole.fold()):
                self.buckets[i].table = rows  # already folded
            self.whole = None

    def _spread(self, table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
        bucket = bucket_of(table.column(self.key), self.bits)
        table = table.take(np.argsort(bucket, kind="stable"))  # stable: each key's rows stay in order
        start = 0
        for i, stop in enumerate(np.cumsum(np.bincount(bucket, minlength=1 << self.bits)).tolist()):
            if stop > start:
                yield i, table.slice(start, stop - start)
            start = stop

    def result(self) -> pa.Table | None:
        """Every key's row, folded (in bucket order once split)."""
        if self.buckets is None:
            return self.whole.fold()
        tables = [t for t in (b.fold() for b in self.buckets) if t is not None]
        return pa.concat_tables(tables) if tables else None


class _Users:
    """Per train user: the interactions (``count``), the first value of each user column and the latest
    timestamp. One group-by gives the vocabulary's counts and users.parquet's rows. A chunk's rows wait
    unaggregated until they outnumber the users folded so far (see _Folded): where most of a chunk's users
    are distinct (100M interactions over 10M users) a group-by per chunk would shrink it little."""

    def __init__(self, schema: pa.Schema):
        self.columns = [c for c in USER_COLUMNS if c in schema.names]
        self.timestamp = "timestamp" in schema.names
        self.folded = _Partitioned(self._aggregate, "user_id")

    def _aggregate(self, table: pa.Table) -> pa.Table:
        aggs = ([("count", "sum")] + [(c, "first") for c in self.columns] +
                ([("last_timestamp", "max")] if self.timestamp else []))
        out = table.group_by("user_id", use_threads=False).aggregate(aggs)
        return out.rename_columns([n.rsplit("_", 1)[0] if n != "user_id" else n for n in out.column_names])

    def add(self, part: pa.Table) -> None:
        columns = {"user_id": part.column("user_id"), "count": pa.array(np.ones(part.num_rows, np.int64)),
                   **{c: part.column(c) for c in self.columns}}
        if self.timestamp:
            columns["last_timestamp"] = part.column("timestamp")
        self.folded.add(pa.table(columns))

    def result(self) -> tuple[pa.Table, pa.Table]:
        """The user vocabulary (user_id, count: by count descending, then id) and one row per vocabulary
        user, in its order, with the user columns and last_timestamp."""
        table = self.folded.result()
        table = table.take(vocabulary_order(table.column("user_id"), table.column("count")))
        table = table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))  # the group key is not null
        rows = table.select([c for c in table.column_names if c != "count"])
        return table.select(["user_id", "count"]), rows


class _Counter:
    """Occurrences per key, folded with Arrow as chunks arrive (see _Folded, _Partitioned)."""

    def __init__(self):
        self.folded = _Partitioned(lambda t: t.group_by("key").aggregate([("count", "sum")]).rename_columns(
            ["key", "count"]), "key")

    def add(self, keys: pa.Array) -> None:
        vc = pc.value_counts(keys)
        self.folded.add(pa.table({"key": vc.field("values"), "count": pc.cast(vc.field("counts"), pa.int64())}))

    def result(self, name: str) -> pa.Table:
        """Sorted by count (descending), then key: the vocabulary order."""
        table = self.folded.result()
        if table is None:
            return pa.table({name: pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        t = table.select(["key", "count"]).rename_columns([name, "count"])
        return t.take(vocabulary_order(t.column(name), t.column("count")))


def _temporal_cut(source, cfg: DataConfig) -> int:
    """The timestamp at the (1 - test_fraction) quantile: later interactions are test."""
    if "timestamp" not in source.columns:
        raise DataError(f"a temporal split needs timestamps; the {source.name} source has no timestamp column")
    parts = [b.column("timestamp") for b in source.interactions(cfg.chunk_rows)]
    timestamps = pa.chunked_array(parts, pa.int64())
    if timestamps.null_count:
        raise DataError(f"a temporal split needs a timestamp on every interaction; {timestamps.null_count} have none")
    return int(pc.quantile(timestamps, q=1.0 - cfg.test_fraction, interpolation="higher")[0].as_py())


def prepare(cfg: DataConfig, out: str | Path, force: bool = False) -> Dataset:
    """Reads ``cfg``'s source and writes the dataset directory ``out`` (see module doc).

    An existing ``out`` is replaced only if it is a dataset (or empty), unless ``force``.
    """
    started = time.monotonic()
    source = open_source(cfg)
    items = source.items()
    item_ids = None if items is None else items.column("movie_id").combine_chunks()
    check_items = item_ids is not None and not getattr(source, "items_by_construction", False)
    schema = None
    cut = _temporal_cut(source, cfg) if cfg.split == "temporal" else None
    train_items = _Counter()
    user_table: _Users | None = None
    seen_items: list[pa.Table] = []
    total = n_test_before = 0
    with atomic_dir(out, MANIFEST, force) as tmp:
        train = test = None
        for chunk, batch in enumerate(rechunk(source.interactions(cfg.chunk_rows), cfg.chunk_rows)):
            if train is None:
                schema = batch.schema
                train = ShardWriter(tmp / "train", cfg.train_shards, schema, cfg.row_group_size)
                test = ShardWriter(tmp / "test", cfg.test_shards, schema, cfg.row_group_size)
                user_table = _Users(schema)
            n = batch.num_rows
            table = pa.Table.from_batches([batch])
            if check_items:
                unknown = pc.invert(pc.is_in(batch.column("movie_id"), value_set=item_ids))
                if pc.any(unknown).as_py():
                    i = pc.index(unknown, True).as_py()
                    raise DataError(f"interaction {total + i + 1}: movie_id {batch.column('movie_id')[i].as_py()!r} "
                                    "is not among the source's movies")
            elif item_ids is None:
                seen_items.append(distinct_items(table))
                if len(seen_items) > 8:
                    seen_items = [merge_items(seen_items)]
            if cut is None:
                rng = np.random.default_rng([cfg.seed, chunk])
                order = rng.permutation(n)
                n_test = round((total + n) * cfg.test_fraction) - n_test_before
                test_rows, train_rows = order[:n_test], order[n_test:]
            else:
                late = batch.column("timestamp").to_numpy(zero_copy_only=False) >= cut
                test_rows, train_rows = np.flatnonzero(late), np.flatnonzero(~late)
            train_part = table.take(train_rows)
            train.write(train_part)
            test.write(table.take(test_rows))
            user_table.add(train_part)
            train_items.add(train_part.column("movie_id"))
            total += n
            n_test_before += len(test_rows)
            log.info("prepare: %s interactions read (train %s, test %s), %.1f s", f"{total:,}",
                     f"{total - n_test_before:,}", f"{n_test_before:,}", time.monotonic() - started)
        if train is None:
            raise DataError(f"{_describe(source)}: no interactions to prepare")
        train.close()
        test.close()
        n_train, n_test = total - n_test_before, n_test_before
        at_cut = "" if cut is None else (
            f"; every interaction is at or after the cut, timestamp {cut:,} (the {1 - cfg.test_fraction:g} quantile): "
            "the timestamps tie there, and a temporal split needs times that differ")
        for split, rows in (("train", n_train), ("test", n_test)):
            if rows == 0:
                raise DataError(f"the {split} split is empty ({total:,} interactions, {cfg.split} split, "
                                f"test_fraction {cfg.test_fraction}){at_cut if split == 'train' else ''}; expected "
                                "rows in both splits")
        if cut is not None and n_test / total > cfg.test_fraction + 0.05:
            log.warning("prepare: the temporal split's test holds %.1f%% of the interactions, not %g%%: the "
                        "interactions at the cut, timestamp %s, tie, and all of them are test", 100 * n_test / total,
                        100 * cfg.test_fraction, f"{cut:,}")
        if items is None:
            items = merge_items(seen_items)
        candidates = _candidates(items, train_items.result("movie_id"))
        (tmp / "vocab").mkdir()
        user_vocab, user_rows = user_table.result()
        pq.write_table(user_vocab, tmp / "vocab" / "user_id.parquet", use_dictionary=False)  # one row per user
        pq.write_table(candidates.select(["movie_id", "train_count"]).rename_columns(["movie_id", "count"]),
                       tmp / "vocab" / "movie_id.parquet")
        pq.write_table(candidates, tmp / "candidates.parquet", row_group_size=cfg.row_group_size)
        pq.write_table(user_rows, tmp / "users.parquet", row_group_size=cfg.row_group_size, use_dictionary=False)
        manifest = {
            "format": "scaleout-dataset/1",
            "scaleout_version": __version__,
            "created": utc_now(),
            "config": dataclasses.asdict(cfg),
            "source": source.describe(),
            "split": {"kind": cfg.split, "test_fraction": cfg.test_fraction, "seed": cfg.seed,
                      "chunk_rows": cfg.chunk_rows, "temporal_cut": cut},
            "counts": {
                "interactions": total, "train": n_train, "test": n_test,
                "train_users": user_vocab.num_rows, "candidates": candidates.num_rows,
                "train_items": int(pc.sum(pc.greater(candidates.column("train_count"), 0)).as_py() or 0),
            },
            "shards": {"train": [str(p.relative_to(tmp)) for p in train.paths],
                       "test": [str(p.relative_to(tmp)) for p in test.paths]},
            "schema": {f.name: str(f.type) for f in schema},
            "candidate_schema": {f.name: str(f.type) for f in candidates.schema},
            "user_schema": {f.name: str(f.type) for f in user_rows.schema},
            "files": checksums(tmp),
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("prepare: wrote %s (%s train, %s test, %s users, %s candidates) in %.1f s", out, f"{n_train:,}",
             f"{n_test:,}", f"{user_vocab.num_rows:,}", f"{candidates.num_rows:,}", time.monotonic() - started)
    return Dataset(out)


def _candidates(items: pa.Table, counts: pa.Table) -> pa.Table:
    at = pc.index_in(items.column("movie_id"), value_set=counts.column("movie_id").combine_chunks())
    train_count = pc.fill_null(pc.take(counts.column("count"), at), 0)
    columns = {"movie_id": items.column("movie_id"), "movie_title": items.column("movie_title")}
    if "movie_genres" in items.schema.names:
        columns["movie_genres"] = items.column("movie_genres")
    columns["train_count"] = train_count
    return pa.table(columns)


def _describe(source) -> str:
    d = source.describe()
    return d.get("path") or d.get("tfds_name") or d["source"]
