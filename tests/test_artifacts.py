"""RUN/artifacts.json: parts built from other parts are refused by name, by the stages and by verify."""

import json
import re
import shutil

import numpy as np
import pytest

from conftest import run_cli


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
    from scaleout.index.brute_force import BruteForce

    ids = np.array([f"m{i}" for i in range(50)])
    BruteForce().build(ids, np.ones((50, 16), np.float32)).save(root / "index" / "brute_force",
                                                                 source={"embeddings": "x", "dim": 16})
    result = run_cli("recommend", "--run", root, "--user", "42", "--index", "brute_force")
    assert result.returncode == 1
    assert "holds 16-dimensional embeddings" in result.stderr and "128-dimensional" in result.stderr


def test_each_metrics_file_records_the_model_it_was_made_from_and_verify_checks_it(pipeline_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(pipeline_run[0], root)
    made = {name: json.loads((root / "metrics" / f"{name}.json").read_text())["made_from"]
            for name in ("eval", "index_eval", "quality")}
    assert set(made["eval"]) == set(made["quality"]) == {"query_tower", "candidate_tower"}
    assert set(made["index_eval"]) == {"query_tower", "embeddings", "index/scann", "index/brute_force"}
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 0, verify.stderr[-2000:]
    for name in ("eval", "index_eval", "quality"):
        assert f"ok  metrics/{name}.json" in verify.stdout
    # quality.json as another model would have left it
    quality = json.loads((root / "metrics" / "quality.json").read_text())
    quality["made_from"]["query_tower"] = "0" * 64
    (root / "metrics" / "quality.json").write_text(json.dumps(quality))
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 1
    assert "metrics/quality.json was built from other query_tower (000000000000)" in verify.stderr
    assert "write it again (`scaleout quality`)" in verify.stderr
    (root / "metrics" / "eval.json").write_text('{"metrics": ')  # cut short
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 1 and "metrics/eval.json: not a metrics file (expected a JSON object)" in verify.stderr


@pytest.mark.slow
def test_a_model_trained_again_leaves_its_predecessors_metrics_named_until_they_are_written_again(pipeline_run,
                                                                                                  tmp_path):
    """`scaleout train --no-evaluate` and an index and export of the new model: every part is consistent but
    the metrics, which describe the model trained before; verify names them, one by one, until written again."""
    root = tmp_path / "run"
    shutil.copytree(pipeline_run[0], root)
    before = (root / "metrics" / "eval.json").read_bytes()
    trained = run_cli("train", "--run", root, "--epochs", "1", "--no-evaluate")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads(trained.stdout) == {} and (root / "metrics" / "eval.json").read_bytes() == before
    indexed = run_cli("index", "--run", root, "--export", "scann", "brute_force")
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 1 and re.search(r"metrics/eval.json was built from other \w+_tower", verify.stderr)
    assert "(`scaleout evaluate`)" in verify.stderr
    evaluated = run_cli("evaluate", "--run", root)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 1 and re.search(r"metrics/quality.json was built from other \w+_tower", verify.stderr)
    assert "ok  metrics/eval.json" not in verify.stdout  # the failure ends the listing
    assert run_cli("quality", "--run", root, "--baselines", "popularity").returncode == 0
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 0, verify.stderr[-2000:]
    assert all(f"ok  metrics/{name}.json" in verify.stdout for name in ("eval", "index_eval", "quality"))
