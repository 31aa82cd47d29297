"""The embedding job and the import of embeddings made elsewhere, on the main job's run: resume, refusals."""

import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from runs import copy_trained, top3, write_embeddings
from scaleout.config import IndexJobConfig
from scaleout.fsutil import tree_fingerprint


def test_imported_embeddings_are_indexed(imported_run, tmp_path):
    root, ids, vectors = imported_run
    write_embeddings(tmp_path / "good.parquet", ids[::-1], vectors[::-1])
    result = run_cli("index", "--run", root, "--embeddings", tmp_path / "good.parquet", "--indexes", "brute_force")
    assert result.returncode == 0, result.stderr[-2000:]
    rec = run_cli("recommend", "--run", root, "--user", "42", "-k", 3)
    assert rec.returncode == 0 and len(top3(rec.stdout)) == 3


@pytest.mark.parametrize("damage, message", [
    ("missing", "no embedding for 1 candidates, the first"),
    ("duplicate", "appears 2 times"),
    ("nan", "holds NaN or infinite values"),
    ("inf", "holds NaN or infinite values"),
    ("dimension", "expected 128 (the dimension of the query tower"),
    ("empty", "no embeddings (0 rows)"),
])
def test_bad_embeddings_are_refused_and_nothing_built_is_touched(imported_run, tmp_path, damage, message):
    from scaleout.errors import DataError
    from scaleout.index.build import index_run
    from scaleout.rundir import RunDir

    root, ids, vectors = imported_run
    vectors = vectors.copy()
    if damage == "missing":
        ids, vectors = ids[1:], vectors[1:]
    elif damage == "duplicate":
        ids = np.concatenate([ids, ids[:1]])
        vectors = np.concatenate([vectors, vectors[:1]])
    elif damage in ("nan", "inf"):
        vectors[7, 3] = np.nan if damage == "nan" else np.inf
    elif damage == "dimension":
        vectors = vectors[:, :16]
    elif damage == "empty":
        ids, vectors = ids[:0], vectors[:0]
    write_embeddings(tmp_path / "bad.parquet", ids, vectors)
    before = {part: tree_fingerprint(root / part) for part in ("embeddings", "index", "export")}
    with pytest.raises(DataError, match=re.escape(message)):
        index_run(RunDir(root), IndexJobConfig(embeddings=str(tmp_path / "bad.parquet")))
    assert {part: tree_fingerprint(root / part) for part in before} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_candidate_tables_with_repeated_or_no_rows_are_refused(tree_run, tmp_path):
    from scaleout.errors import DataError
    from scaleout.index.build import index_run
    from scaleout.rundir import RunDir

    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    before = tree_fingerprint(root / "embeddings")
    candidates = pq.read_table(root / "data" / "candidates.parquet")
    pq.write_table(pa.concat_tables([candidates, candidates.slice(5, 1)]), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"id '\d+' appears 2 times in the candidate table"):
        index_run(RunDir(root), IndexJobConfig(candidates=str(tmp_path / "dup.parquet")))
    pq.write_table(candidates.slice(0, 0), tmp_path / "empty.parquet")
    result = run_cli("index", "--run", root, "--candidates", tmp_path / "empty.parquet")
    assert result.returncode == 1 and "empty.parquet has no rows; nothing to embed" in result.stderr
    assert tree_fingerprint(root / "embeddings") == before


def test_an_interrupted_embedding_job_resumes_without_recomputing_finished_parts(pipeline_run, tmp_path):
    root = copy_trained(pipeline_run[0], tmp_path / "run")
    first = run_cli("index", "--run", root, "--part-rows", 200, "--max-parts", 3)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "stopped after 3 more parts as asked" in first.stderr and not (root / "embeddings").exists()
    partial = root / ".embeddings.partial"
    done = {p.name: p.stat().st_mtime_ns for p in sorted(partial.glob("part-*.parquet"))}
    assert len(done) == 3
    damaged = partial / sorted(done)[1]  # changed in place, its size kept: found by its checksum
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    del done[damaged.name]
    second = run_cli("index", "--run", root, "--part-rows", 200, "--indexes", "brute_force", "--no-eval")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming: 2 of 9 parts (400 candidates) already embedded" in second.stderr
    assert second.stderr.count("embedded part") == 7
    assert {name: (root / "embeddings" / name).stat().st_mtime_ns for name in done} == done
    assert not partial.exists()
    from scaleout.embed.embedding_set import EmbeddingSet

    ids, vectors, _ = EmbeddingSet(root / "embeddings").load()
    ref_ids, ref_vectors, _ = EmbeddingSet(pipeline_run[0] / "embeddings").load()
    order = np.argsort(ids)
    ref_order = np.argsort(ref_ids)
    assert (ids[order] == ref_ids[ref_order]).all()
    np.testing.assert_allclose(vectors[order], ref_vectors[ref_order], rtol=1e-6)
