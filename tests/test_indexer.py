"""The indexer half on MovieLens 100K: embeddings, BruteForce and ScaNN indexes, FactorizedTopK through
each, SavedModels reloaded in fresh processes, the artifact manifest, and the bad-input refusals."""

import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from scaleout.config import IndexConfig
from scaleout.fsutil import tree_fingerprint

FRESH_SCANN_QUERY = """
import sys, json
import scann  # registers ScaNN's TensorFlow ops; neither scaleout nor TFRS is imported
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
out = serve(user_id=tf.constant(sys.argv[2].split(",")))
print(json.dumps({"ids": [[m.decode() for m in row] for row in out["movie_id"].numpy()],
                  "titles": [t.decode() for t in out["movie_title"].numpy()[0]],
                  "signature_k": serve.structured_outputs["scores"].shape.as_list()[1]}))
"""

NO_SCANN = """
import sys
sys.modules["scann"] = None  # as where ScaNN is not installed: `import scann` raises ImportError
from scaleout.cli import main
sys.exit(main(sys.argv[1:]))
"""

USERS = [str(u) for u in range(1, 60)]


def top3(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    return [line.split(". ", 1)[1].rsplit("  (movie_id", 1)[0] for line in lines]


def fresh_query(export_dir, users):
    fresh = subprocess.run([sys.executable, "-c", FRESH_SCANN_QUERY, str(export_dir), ",".join(users)],
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return json.loads(fresh.stdout)


def in_process_answers(root, users, k=10):
    from scaleout.embeddings import EmbeddingSet
    from scaleout.indexer import open_index
    from scaleout.model import embed_users
    from scaleout.rundir import RunDir
    from scaleout.train import Towers

    run = RunDir(root)
    index = open_index(run, "scann", EmbeddingSet(run.embeddings))
    queries = embed_users(Towers.load(run.model).query, users)
    return index, index.search(queries, k)[1].tolist()


def copy_trained(src, dst):
    for part in ("data", "model"):
        shutil.copytree(src / part, dst / part)
    return dst


@pytest.fixture(scope="module")
def tree_run(pipeline_run, tmp_path_factory):
    """The pipeline's model, indexed again with ScaNN forced into a tree (1,682 candidates would get exact scoring)."""
    root = copy_trained(pipeline_run[0], tmp_path_factory.mktemp("tree") / "run")
    result = run_cli("index", "--run", root, "--scann-mode", "tree", "--num-leaves", 40, "--part-rows", 500,
                     "--export", "scann", "brute_force")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads(result.stdout)


def test_scann_agrees_with_brute_force_on_the_pipeline_run(pipeline_run):
    root, summary, log = pipeline_run
    recs = summary["recommendations"]
    assert recs["scann"] == recs["brute_force"] and len(recs["scann"]) == 3
    report = json.loads((root / "metrics" / "index_eval.json").read_text())
    name = "factorized_top_k/top_100_categorical_accuracy"
    assert abs(report["scann"][name] - report["brute_force"][name]) <= 0.01
    assert report["brute_force"][name] == pytest.approx(summary["metrics"][name], abs=2e-3)  # the model's own
    assert report["brute_force"][name] > 0.35  # the quality preset (the tutorial's model: 0.24)
    assert report["scann"]["mode"] == "brute_force"  # 1,682 candidates: exact scoring, with a note in the log
    assert "fewer than 20,000: ScaNN scores them all exactly" in log
    assert "embedded part 1/1: 1,682 of 1,682 candidates (100%)" in log


def test_the_scann_saved_model_answers_in_a_fresh_process_as_the_index_does(pipeline_run):
    root, summary, _ = pipeline_run
    served = fresh_query(root / "export" / "scann", ["42"] + USERS)
    assert served["signature_k"] == 10
    assert served["titles"][:3] == summary["recommendations"]["scann"]
    _, answers = in_process_answers(root, ["42"] + USERS)
    assert served["ids"] == answers


def test_a_tree_index_and_its_saved_model_give_the_same_answers(tree_run):
    root, summary = tree_run
    assert summary["indexes"]["scann"]["mode"] == "tree" and summary["indexes"]["scann"]["num_leaves"] == 40
    assert summary["embeddings"]["candidates"] == 1682 and len(list((root / "embeddings").glob("part-*"))) == 4
    index, answers = in_process_answers(root, USERS)
    assert fresh_query(root / "export" / "scann", USERS)["ids"] == answers
    evaluation = json.loads((root / "metrics" / "index_eval.json").read_text())
    recall = evaluation["scann"]["recall_vs_brute_force"]["@10"]
    assert 0.0 < recall < 1.0  # a few of 40 leaves searched: approximate, and reported as such
    expected = math.ceil(40 * IndexConfig().leaves_fraction)
    assert evaluation["scann"]["search"]["leaves_to_search"] == index.default_leaves_to_search() == expected
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 0, verify.stderr[-2000:]
    for name in ("vocabularies", "query_tower", "candidate_tower", "embeddings", "index/scann", "export/scann"):
        assert f"ok  {name}" in verify.stdout


def test_without_scann_the_export_says_how_to_fix_it_and_recommend_falls_back(pipeline_run):
    root, summary, _ = pipeline_run
    args = ["recommend", "--saved-model", str(root / "export" / "scann"), "--user", "42", "-k", "3"]
    refused = subprocess.run([sys.executable, "-c", NO_SCANN, *args], capture_output=True, text=True)
    assert refused.returncode == 1
    assert "holds ScaNN ops but ScaNN is not importable here" in refused.stderr
    assert "pip install scann==1.4.2" in refused.stderr and "Traceback" not in refused.stderr
    fallback = subprocess.run([sys.executable, "-c", NO_SCANN, *args, "--run", str(root)], capture_output=True,
                              text=True)
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    assert "answering with BruteForce" in fallback.stderr
    assert top3(fallback.stdout) == summary["recommendations"]["brute_force"]


def test_mismatched_parts_are_refused_by_name(pipeline_run, tree_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    # An index built from other embeddings (the pipeline run's, partitioned differently).
    shutil.rmtree(root / "index" / "scann")
    shutil.copytree(pipeline_run[0] / "index" / "scann", root / "index" / "scann")
    result = run_cli("recommend", "--run", root, "--user", "42", "--index", "scann")
    assert result.returncode == 1 and "built from other embeddings" in result.stderr
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 1 and "index/scann: its files changed since it was recorded" in verify.stderr
    # An index of another embedding dimension.
    from scaleout.index import BruteForce

    ids = np.array([f"m{i}" for i in range(50)])
    BruteForce().build(ids, np.ones((50, 16), np.float32)).save(root / "index" / "brute_force",
                                                                 source={"embeddings": "x", "dim": 16})
    result = run_cli("recommend", "--run", root, "--user", "42", "--index", "brute_force")
    assert result.returncode == 1
    assert "holds 16-dimensional embeddings" in result.stderr and "32-dimensional" in result.stderr


def test_corrupt_or_truncated_indexes_and_oversized_k_are_refused(tree_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    too_many = run_cli("recommend", "--run", root, "--user", "42", "-k", 5000, "--index", "scann")
    assert too_many.returncode == 1 and "k=5000 but the index holds 1682 candidates" in too_many.stderr
    export = run_cli("export", "--run", root, "--kind", "scann", "-k", 5000)
    assert export.returncode == 1 and "k=5000 but there are 1682 candidates" in export.stderr
    for kind, name in (("scann", "scann/dataset.npy"), ("brute_force", "ids.npy")):
        path = root / "index" / kind / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        result = run_cli("recommend", "--run", root, "--user", "42", "--index", kind)
        assert result.returncode == 1 and "corrupt or truncated" in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr


def write_embeddings(path, ids, vectors):
    pq.write_table(pa.table({"movie_id": pa.array(ids, pa.string()),
                             "embedding": pa.array([list(map(float, v)) for v in vectors], pa.list_(pa.float32()))}),
                   path)


@pytest.fixture
def imported_run(tree_run, tmp_path):
    """A copy of the tree run and the embeddings it holds, as a user-supplied Parquet file."""
    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    from scaleout.embeddings import EmbeddingSet

    ids, vectors, _ = EmbeddingSet(root / "embeddings").load()
    return root, ids, vectors


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
    ("dimension", "expected 32 (the dimension of the query tower"),
    ("empty", "no embeddings (0 rows)"),
])
def test_bad_embeddings_are_refused_and_nothing_built_is_touched(imported_run, tmp_path, damage, message):
    from scaleout.errors import DataError
    from scaleout.indexer import index_run
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
        index_run(RunDir(root), embeddings=tmp_path / "bad.parquet")
    assert {part: tree_fingerprint(root / part) for part in before} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_candidate_tables_with_repeated_or_no_rows_are_refused(tree_run, tmp_path):
    from scaleout.errors import DataError
    from scaleout.indexer import index_run
    from scaleout.rundir import RunDir

    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    before = tree_fingerprint(root / "embeddings")
    candidates = pq.read_table(root / "data" / "candidates.parquet")
    pq.write_table(pa.concat_tables([candidates, candidates.slice(5, 1)]), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"id '\d+' appears 2 times in the candidate table"):
        index_run(RunDir(root), candidates=tmp_path / "dup.parquet")
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
    done = {p.name: p.stat().st_mtime_ns for p in partial.glob("part-*.parquet")}
    assert len(done) == 3
    second = run_cli("index", "--run", root, "--part-rows", 200, "--indexes", "brute_force", "--no-eval")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming: 3 of 9 parts (600 candidates) already embedded" in second.stderr
    assert second.stderr.count("embedded part") == 6
    assert {name: (root / "embeddings" / name).stat().st_mtime_ns for name in done} == done
    assert not partial.exists()
    from scaleout.embeddings import EmbeddingSet

    ids, vectors, _ = EmbeddingSet(root / "embeddings").load()
    ref_ids, ref_vectors, _ = EmbeddingSet(pipeline_run[0] / "embeddings").load()
    order = np.argsort(ids)
    ref_order = np.argsort(ref_ids)
    assert (ids[order] == ref_ids[ref_order]).all()
    np.testing.assert_allclose(vectors[order], ref_vectors[ref_order], rtol=1e-6)
