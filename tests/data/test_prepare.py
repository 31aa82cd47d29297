import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from scaleout.config import DataConfig
from scaleout.data.dataset import Dataset
from scaleout.data.prepare import prepare, rechunk
from scaleout.errors import ArtifactError, DataError


def split_table(ds, split):
    return pa.concat_tables([pq.read_table(f) for f in ds.files(split)])


def test_ml100k_counts_and_split(ml100k_dataset):
    ds = ml100k_dataset
    assert ds.counts == {"interactions": 100_000, "train": 80_000, "test": 20_000, "train_users": 943,
                         "candidates": 1682, "train_items": ds.counts["train_items"]}
    train, test = split_table(ds, "train"), split_table(ds, "test")
    assert (train.num_rows, test.num_rows) == (80_000, 20_000)
    # Every rating lands in exactly one split: (user, movie) pairs are unique in u.data.
    pairs = lambda t: set(zip(t.column("user_id").to_pylist(), t.column("movie_id").to_pylist()))
    assert len(pairs(train) | pairs(test)) == 100_000 and not pairs(train) & pairs(test)
    assert ds.manifest["split"]["seed"] == 42 and ds.manifest["source"]["layout"] == "100k"
    ds.verify()


def test_vocabularies_match_counts_done_by_hand(ml100k_dataset):
    ds = ml100k_dataset
    train = split_table(ds, "train")
    users, counts = np.unique(train.column("user_id").to_numpy(zero_copy_only=False), return_counts=True)
    vocab = pq.read_table(ds.path / "vocab" / "user_id.parquet").to_pylist()
    assert {r["user_id"]: r["count"] for r in vocab} == dict(zip(users, counts))
    assert [r["count"] for r in vocab] == sorted(counts, reverse=True)
    items = dict(zip(*np.unique(train.column("movie_id").to_numpy(zero_copy_only=False), return_counts=True)))
    for row in ds.candidates.to_pylist():
        assert row["train_count"] == items.get(row["movie_id"], 0)
    assert list(ds.vocabulary("movie_id")) == ds.candidates.column("movie_id").to_pylist()


def test_the_split_is_deterministic_and_seeded(ml100k, ml100k_dataset, tmp_path):
    again = prepare(DataConfig(source="movielens", path=str(ml100k)), tmp_path / "again")
    assert {k: v["sha256"] for k, v in again.manifest["files"].items()} == \
        {k: v["sha256"] for k, v in ml100k_dataset.manifest["files"].items()}
    other = prepare(DataConfig(source="movielens", path=str(ml100k), seed=7), tmp_path / "other")
    assert not split_table(other, "test").equals(split_table(ml100k_dataset, "test"))


def test_users_and_items_split_into_buckets_write_the_same_files(tmp_path, monkeypatch):
    """Prepare's group-bys split by a hash of the key once they hold PARTITION_AT keys (a million in use);
    split at 200 users and items here, every file is byte for byte the one written without splitting."""
    import scaleout.data.prepare as prep

    cfg = DataConfig(source="synthetic", synthetic_interactions=30_000, synthetic_users=3_000,
                     synthetic_items=1_500, chunk_rows=2_000)
    whole = prepare(cfg, tmp_path / "whole")
    made = []
    real = prep._Partitioned.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(prep, "PARTITION_AT", 200)
    monkeypatch.setattr(prep, "PARTITION_BITS", 4)
    monkeypatch.setattr(prep._Partitioned, "__init__", spy)
    split = prepare(cfg, tmp_path / "split")
    assert [p.key for p in made] == ["key", "user_id"] and all(p.buckets and p.whole is None for p in made)
    assert split.manifest["counts"] == whole.manifest["counts"]
    assert {k: v["sha256"] for k, v in split.manifest["files"].items()} == \
        {k: v["sha256"] for k, v in whole.manifest["files"].items()}


def test_shards_and_row_groups_follow_the_settings(tmp_path):
    cfg = DataConfig(source="synthetic", synthetic_interactions=10_000, train_shards=3, test_shards=2,
                     row_group_size=500, chunk_rows=4_000)
    ds = prepare(cfg, tmp_path / "data")
    rows = [pq.ParquetFile(f).metadata.num_rows for f in ds.files("train")]
    assert len(rows) == 3 and sum(rows) == 8_000 and max(rows) - min(rows) <= 1
    assert len(ds.files("test")) == 2
    assert all(pq.ParquetFile(f).metadata.row_group(0).num_rows <= 500 for f in ds.files("train"))


def test_temporal_split_puts_the_latest_interactions_in_test(ml100k, tmp_path):
    ds = prepare(DataConfig(source="movielens", path=str(ml100k), split="temporal"), tmp_path / "data")
    train, test = split_table(ds, "train"), split_table(ds, "test")
    assert pc.max(train.column("timestamp")).as_py() < pc.min(test.column("timestamp")).as_py()
    assert abs(test.num_rows - 20_000) < 100


def test_a_temporal_split_says_when_ties_at_the_cut_take_more_than_its_share_or_every_row(tmp_path, caplog):
    import logging

    f = tmp_path / "events.csv"
    # half the rows at one time, the latest: the cut lands in them and all of them are test
    f.write_text("user_id,item_id,timestamp\n" + "".join(f"u{n % 9},i{n % 7},{1000 if n % 2 else n}\n"
                                                         for n in range(200)))
    with caplog.at_level(logging.WARNING, logger="scaleout.data.prepare"):
        ds = prepare(DataConfig(source="generic", path=str(f), split="temporal", repeated_pairs="all"),
                     tmp_path / "data")
    assert ds.counts["test"] == 100
    assert ("the temporal split's test holds 50.0% of the interactions, not 20%: the interactions at the cut, "
            "timestamp 1,000, tie, and all of them are test") in caplog.text
    # every row at one time: all of them test, and the error says why
    f.write_text("user_id,item_id,timestamp\n" + "".join(f"u{n % 9},i{n % 7},1000\n" for n in range(50)))
    with pytest.raises(DataError, match=re.escape(
            "the train split is empty (50 interactions, temporal split, test_fraction 0.2); every interaction is at "
            "or after the cut, timestamp 1,000 (the 0.8 quantile): the timestamps tie there")):
        prepare(DataConfig(source="generic", path=str(f), split="temporal", repeated_pairs="all"), tmp_path / "d2")
    assert not (tmp_path / "d2").exists()


def test_rechunk_gives_fixed_boundaries():
    batches = [pa.record_batch({"x": list(range(i, i + n))}) for i, n in ((0, 3), (3, 7), (10, 1), (11, 4))]
    out = list(rechunk(iter(batches), 4))
    assert [b.num_rows for b in out] == [4, 4, 4, 3]
    assert pa.Table.from_batches(out).column("x").to_pylist() == list(range(15))


def test_an_empty_split_fails_and_leaves_nothing(tmp_path):
    f = tmp_path / "one.csv"
    f.write_text("user_id,item_id\nu1,i1\n")
    with pytest.raises(DataError, match="the test split is empty"):
        prepare(DataConfig(source="generic", path=str(f)), tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv"]


def test_a_failed_prepare_keeps_the_previous_dataset(ml100k_dataset, tmp_path):
    out = tmp_path / "data"
    good = prepare(DataConfig(source="synthetic", synthetic_interactions=1000), out)
    before = (out / "manifest.json").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,i1,1\nu2,i2,x\n")
    with pytest.raises(DataError, match="line 3"):
        prepare(DataConfig(source="generic", path=str(bad)), out)
    assert (out / "manifest.json").read_text() == before
    Dataset(good.path).verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "data"]


def test_a_changed_or_missing_file_is_detected(tmp_path):
    ds = prepare(DataConfig(source="synthetic", synthetic_interactions=1000), tmp_path / "data")
    victim = ds.files("train")[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match="part-00000.parquet: checksum differs"):
        Dataset(ds.path).verify()
    victim.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Dataset(ds.path)
    with pytest.raises(ArtifactError, match="not a prepared dataset"):
        Dataset(tmp_path)


def test_manifest_records_schema_and_source(ml100k_dataset):
    m = json.loads((ml100k_dataset.path / "manifest.json").read_text())
    assert m["schema"]["user_id"] == "string" and m["schema"]["movie_genres"] == "list<item: string>"
    assert m["candidate_schema"]["train_count"] == "int64"
    assert m["config"]["test_fraction"] == 0.2 and m["source"]["source"] == "movielens"


@pytest.mark.parametrize("split_at", [None, 300])
def test_per_user_tables_folded_chunk_by_chunk_equal_one_pass_over_everything(split_at):
    """Counts, per-user first values and latest timestamps folded lazily (_Folded: the pending rows are merged
    only once they outnumber three times the table) equal a single pass over all the rows, in order; the
    vocabulary is by count (descending), then id. So do they split into buckets by a hash of the id
    (_Partitioned, here once 300 users are folded; prepare splits at a million)."""
    from scaleout.data.prepare import _Partitioned, _Users

    rng = np.random.default_rng(0)
    n, chunk = 30_000, 700
    users = np.char.add("u", rng.zipf(1.3, n).clip(max=5000).astype(str))
    table = pa.table({"user_id": users, "user_gender": rng.integers(0, 2, n).astype(bool),
                      "timestamp": rng.integers(0, 10**9, n)})
    per_user = _Users(table.schema)
    if split_at:
        per_user.folded = _Partitioned(per_user._aggregate, "user_id", at=split_at, bits=3)
    def tables():  # the one table's, or each bucket's once split
        folded = per_user.folded
        if folded.whole is not None:
            return {"whole": folded.whole.table}
        return {i: b.table for i, b in enumerate(folded.buckets)}

    folds, chunks = {}, range(0, n, chunk)
    for start in chunks:
        before = tables()
        per_user.add(table.slice(start, chunk))
        for key, now in tables().items():  # a fold replaces the table
            folds[key] = folds.get(key, 0) + (key in before and now is not None and now is not before[key])
    if split_at:
        buckets = per_user.folded.buckets
        assert per_user.folded.whole is None and len(buckets) == 8 and all(b.table is not None for b in buckets)
        assert sum(b.table.num_rows + b.pending_rows for b in buckets) > sum(b.table.num_rows for b in buckets)
        folds.pop("whole", None)  # before the split, folded a few times or not at all
    # every table folded more than once, and not once per chunk
    assert len(folds) == (8 if split_at else 1) and all(1 < f < len(chunks) for f in folds.values()), folds
    vocabulary, rows = per_user.result()
    want = pc.value_counts(table.column("user_id"))
    counts = dict(zip(want.field("values").to_pylist(), want.field("counts").to_pylist()))
    assert vocabulary.column("user_id").to_pylist() == sorted(counts, key=lambda u: (-counts[u], u))
    assert vocabulary.column("count").to_pylist() == sorted(counts.values(), reverse=True)
    assert vocabulary.schema.field("user_id").nullable  # as the format has always written it
    first, last = {}, {}
    for u, g, t in zip(users, table.column("user_gender").to_pylist(), table.column("timestamp").to_pylist()):
        first.setdefault(u, g)
        last[u] = max(last.get(u, t), t)
    rows = rows.to_pylist()
    assert [r["user_id"] for r in rows] == vocabulary.column("user_id").to_pylist()
    assert all(r["user_gender"] == first[r["user_id"]] and r["last_timestamp"] == last[r["user_id"]] for r in rows)
    assert list(rows[0]) == ["user_id", "user_gender", "last_timestamp"]
