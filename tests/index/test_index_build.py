"""The index job on the main job's run: ScaNN beside BruteForce through FactorizedTopK, bad indexes refused."""

import json
import shutil

import pytest

from conftest import run_cli


def test_scann_agrees_with_brute_force_on_the_pipeline_run(pipeline_run):
    root, summary, log = pipeline_run
    recs = summary["recommendations"]
    assert recs["scann"] == recs["brute_force"] and len(recs["scann"]) == 3
    report = json.loads((root / "metrics" / "index_eval.json").read_text())
    name = "factorized_top_k/top_100_categorical_accuracy"
    assert abs(report["scann"][name] - report["brute_force"][name]) <= 0.01
    assert report["brute_force"][name] == pytest.approx(summary["metrics"][name], abs=2e-3)  # the model's own
    assert report["scann"]["mode"] == "brute_force"  # 1,682 candidates: exact scoring, with a note in the log
    assert "fewer than 20,000: ScaNN scores them all exactly" in log
    assert "embedded part 1/1: 1,682 of 1,682 candidates (100%)" in log


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
