import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import scaleout  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)
from scaleout.config import DataConfig

REPO = Path(__file__).resolve().parents[1]


def movielens_100k() -> Path:
    """MovieLens 100K as distributed: $SCALEOUT_MOVIELENS_DIR, else ../shared/data/ml-100k."""
    path = Path(os.environ.get("SCALEOUT_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "ml-100k"))
    if not (path / "u.data").is_file():
        raise RuntimeError(f"MovieLens 100K not found at {path}: set SCALEOUT_MOVIELENS_DIR to its directory")
    return path


@pytest.fixture(scope="session")
def ml100k() -> Path:
    return movielens_100k()


@pytest.fixture(scope="session")
def ml100k_dataset(ml100k, tmp_path_factory):
    from scaleout.data.prepare import prepare

    return prepare(DataConfig(source="movielens", path=str(ml100k)), tmp_path_factory.mktemp("ml100k") / "data")


@pytest.fixture(scope="session")
def pipeline_run(ml100k, tmp_path_factory):
    """The main job, run once through the `scaleout` command: (run dir, summary, log)."""
    root = tmp_path_factory.mktemp("pipeline") / "run"
    result = run_cli("pipeline", "--run", root, env={"SCALEOUT_MOVIELENS_DIR": str(ml100k)})
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads(result.stdout), result.stderr


def run_cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Runs the installed ``scaleout`` command in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    command = Path(sys.executable).parent / "scaleout"
    return subprocess.run([str(command), *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd)
