import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scaleout  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)
from runs import copy_trained
from scaleout.config import DataConfig

REPO = Path(__file__).resolve().parents[1]

# Fixtures that run the main job or start a Ray cluster: every test that asks for one is slow.
SLOW_FIXTURES = {"pipeline_run", "tree_run", "imported_run", "cluster", "small_finished_run", "two_nodes"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def progress_at_every_step(monkeypatch):
    """Every long loop logs its progress line at every step in the tests, where in use the lines are 30 s apart:
    a line that only a long run reaches runs here too (the quality stage's once raised, at 20M interactions
    only). Processes a test starts keep the 30 s."""
    from scaleout import stages

    monkeypatch.setattr(stages, "PROGRESS_SECONDS", 0.0)


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
    """Runs the installed ``scaleout`` command in a fresh process, in the environment a user's shell gives it: this
    process's, less TF_CPP_MIN_LOG_LEVEL, which whatever this process imported first set (jax sets 1, scaleout.tfenv
    3 on a machine without a GPU), so that a command's log does not depend on which tests ran before it."""
    inherited = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    full_env = {**inherited, **(env or {})}
    command = Path(sys.executable).parent / "scaleout"
    return subprocess.run([str(command), *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd)


def ctrl_c_at(process: subprocess.Popen, marker: str, deadline: float = 300) -> tuple[str, str, int]:
    """Sends SIGINT (Ctrl-C) to ``process`` (its stderr a text pipe) once a line of its stderr holds ``marker``:
    (what it said before, what it said after, its exit status). A process that says no such line within
    ``deadline`` seconds is killed and the test fails, naming what it said."""
    import signal
    import threading

    said = []
    watchdog = threading.Timer(deadline, process.kill)
    watchdog.start()
    try:
        for line in process.stderr:
            said.append(line)
            if marker in line:
                process.send_signal(signal.SIGINT)
                break
        rest, status = process.stderr.read(), process.wait(timeout=120)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    assert any(marker in line for line in said), f"no {marker!r} in {deadline} s: " + "".join(said)[-3000:]
    return "".join(said), rest, status


@pytest.fixture(scope="session")
def tree_run(pipeline_run, tmp_path_factory):
    """The pipeline's model, indexed again with ScaNN forced into a tree (1,682 candidates would get exact scoring)."""
    root = copy_trained(pipeline_run[0], tmp_path_factory.mktemp("tree") / "run")
    result = run_cli("index", "--run", root, "--scann-mode", "tree", "--num-leaves", 40, "--leaves-fraction", 0.1,
                     "--part-rows", 500,
                     "--export", "scann", "brute_force")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads(result.stdout)


@pytest.fixture
def imported_run(tree_run, tmp_path):
    """A copy of the tree run and the embeddings it holds, as a user-supplied Parquet file."""
    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    from scaleout.embed.embedding_set import EmbeddingSet

    ids, vectors, _ = EmbeddingSet(root / "embeddings").load()
    return root, ids, vectors


# A small synthetic run, fast to train: for tests that damage, kill or race its stages.
SMALL_RUN = ("--source", "synthetic", "--synthetic-users", 300, "--synthetic-items", 120, "--synthetic-interactions",
             4000, "--train-shards", 2)


@pytest.fixture(scope="session")
def small_finished_run(tmp_path_factory):
    """A small run with every stage done: data, model, embeddings, both indexes (ScaNN hashed), both exports."""
    root = tmp_path_factory.mktemp("small-finished") / "run"
    for args in (("prepare", "--run", root, *SMALL_RUN), ("train", "--run", root, "--epochs", 1, "--batch-size", 512),
                 ("index", "--run", root, "--scann-mode", "ah", "--export", "brute_force", "scann")):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
    return root
