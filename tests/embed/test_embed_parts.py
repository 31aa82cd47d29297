"""Cutting candidate tables into parts and reading them back (no TensorFlow), and the embeddings' checks."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaleout.embed.embedding_set import ID, TITLE, EmbeddingSet
from scaleout.embed.output import throughput
from scaleout.embed.parts import PART_COLUMN, candidate_files, plan_parts, read_part
from scaleout.errors import ArtifactError, DataError


@pytest.fixture
def table_dir(tmp_path):
    """Two shards, 2,500 and 1,000 rows, in row groups of 300."""
    d = tmp_path / "candidates"
    d.mkdir()
    for name, start, n in (("a.parquet", 0, 2500), ("b.parquet", 2500, 1000)):
        ids = [f"c{i}" for i in range(start, start + n)]
        pq.write_table(pa.table({ID: ids, TITLE: [f"Title {i}" for i in ids]}), d / name, row_group_size=300)
    return d


def test_parts_cover_every_row_once_in_order(table_dir):
    parts = plan_parts(candidate_files(table_dir), 1000)
    assert [(p.rows, p.file.endswith("a.parquet")) for p in parts] == [(1000, True), (1000, True), (500, True),
                                                                       (1000, False)]
    rows = pa.concat_tables([read_part(p) for p in parts])
    assert rows.column(ID).to_pylist() == [f"c{i}" for i in range(3500)]
    assert rows.column(TITLE)[1234].as_py() == "Title c1234"
    assert read_part(parts[1]).column(PART_COLUMN).to_pylist() == [1] * 1000


def test_integer_ids_are_read_as_strings_and_titles_may_be_absent(tmp_path):
    pq.write_table(pa.table({ID: pa.array([7, 8, 9], pa.int64())}), tmp_path / "ints.parquet")
    part = plan_parts([tmp_path / "ints.parquet"], 10)[0]
    table = read_part(part)
    assert table.column(ID).to_pylist() == ["7", "8", "9"] and table.column(TITLE).null_count == 3


@pytest.mark.parametrize("table, message", [
    (pa.table({"item": ["a"]}), "no 'movie_id' column"),
    (pa.table({ID: ["a", None, "c"]}), "row 2: movie_id is empty"),
    (pa.table({ID: ["a", "", "c"]}), "row 2: movie_id is empty"),
    (pa.table({ID: pa.array([], pa.string())}), "has no rows; nothing to embed"),
])
def test_bad_candidate_tables_are_named(tmp_path, table, message):
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=message):
        for part in plan_parts([tmp_path / "bad.parquet"], 10):
            read_part(part)


def test_missing_tables_and_empty_directories_are_named(tmp_path):
    with pytest.raises(DataError, match="no such candidate table"):
        candidate_files(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no .parquet files"):
        candidate_files(tmp_path)


def test_throughput_separates_workers_tower_time_and_start_up():
    parts = [{"worker": "a", "rows": 100, "start": 10.0, "end": 11.0, "tower_seconds": 0.25},
             {"worker": "b", "rows": 100, "start": 12.0, "end": 13.0, "tower_seconds": 0.5}]
    t = throughput(parts)
    assert t["per_worker_candidates_per_s"] == {"a": 100, "b": 100}
    assert t["tower_per_worker_candidates_per_s"] == {"a": 400, "b": 200}
    assert t["all_workers_candidates_per_s"] == 200 and t["steady_candidates_per_s"] == 67


def test_a_truncated_part_is_refused(tmp_path):
    from scaleout.embed.output import write_part

    d = tmp_path / "emb"
    d.mkdir()
    summary = write_part(d, 0, pa.array(["a", "b"]), pa.array(["A", "B"]), np.ones((2, 4), np.float32), 0.0, "t")
    (d / "embeddings.json").write_text(json.dumps({
        "format": "scaleout-embeddings/1", "fingerprint": "x", "dim": 4, "candidates": 2,
        "parts": [{"name": "part-00000.parquet", "rows": 2, "bytes": summary["bytes"], "sha256": summary["sha256"]}]}))
    ids, vectors, titles = EmbeddingSet(d).load(titles=True)
    assert ids.tolist() == ["a", "b"] and vectors.shape == (2, 4) and titles.tolist() == ["A", "B"]
    part = d / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:-20])
    with pytest.raises(ArtifactError, match="missing or truncated"):
        EmbeddingSet(d)
