"""benchmarks/input_batches.py: the training input before and now, read as a pinned worker reads it."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from benchscripts import BENCHMARKS, load

SCRIPT = BENCHMARKS / "input_batches.py"


@pytest.fixture(scope="module")
def script():
    return load("input_batches")


def test_both_pipelines_read_the_same_batches_and_the_same_next_candidates(script, tmp_path):
    """The comparison is fair: the earlier pipeline, rebuilt, yields the batches the current one does, across
    passes, with the same next batch's candidates."""
    files = []
    for f in range(2):
        path = tmp_path / f"part-{f}.parquet"
        rows = range(f * 250, (f + 1) * 250)
        pq.write_table(pa.table({"user_id": [f"u{i}" for i in rows], "movie_id": [f"m{i % 37}" for i in rows]}),
                       path, row_group_size=50)
        files.append(path)
    before = list(script.batch_a_call(files, 100, 200, seed=3).take(12))  # 5 batches a pass: 3 passes
    now = list(script.runs_of_batches(files, 100, 200, seed=3).take(12))
    for b, n in zip(before, now):
        assert set(b) == set(n) == {"user_id", "movie_id", "next_movie_id"}
        for column in b:
            np.testing.assert_array_equal(b[column].numpy(), n[column].numpy())
    assert not np.array_equal(now[0]["movie_id"].numpy(), now[5]["movie_id"].numpy())  # a new order each pass


def test_the_script_times_both_at_both_batches_and_writes_its_figures(tmp_path):
    out = tmp_path / "input_batches.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1", "--batches", "16", "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["data"] == "MovieLens 100K" and result["train_rows"] == 80_000
    assert set(result["summary"]) == {"512", "1024"}
    for figures in result["summary"].values():
        assert figures["before_ms"] > 0 and figures["now_ms"] > 0
    assert "| 512 |" in run.stdout and "| 1024 |" in run.stdout
