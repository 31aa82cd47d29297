"""RUN/artifacts.json: parts built from other parts are refused by name, by the stages and by verify."""

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
    assert "holds 16-dimensional embeddings" in result.stderr and "32-dimensional" in result.stderr
