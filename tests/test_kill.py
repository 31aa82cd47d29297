"""`kill -9` in the middle of prepare, train, index and export: the previous outputs stay as they were, nothing
half-written is trusted, and the next command cleans up (or resumes) and succeeds."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SMALL_RUN, run_cli
from scaleout import scratch
from scaleout.fsutil import tree_fingerprint


def start(*args) -> subprocess.Popen:
    command = Path(sys.executable).parent / "scaleout"
    return subprocess.Popen([str(command), *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def kill_when(process: subprocess.Popen, ready, what: str, timeout: float = 120.0) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled every 5 ms); fails if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the command ended before {what}: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def glob_any(directory: Path, pattern: str) -> bool:
    return directory.is_dir() and any(directory.glob(pattern))


def test_kill_prepare_keeps_the_previous_dataset(small_finished_run, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(small_finished_run), str(run)], check=True)
    before = tree_fingerprint(run / "data")
    bigger = ("--source", "synthetic", "--synthetic-users", 30000, "--synthetic-items", 3000,
              "--synthetic-interactions", 3_000_000)
    kill_when(start("prepare", "--run", run, *bigger), lambda: glob_any(run, ".data.tmp-*"), "temporary dataset")
    assert tree_fingerprint(run / "data") == before and glob_any(run, ".data.tmp-*")
    evaluated = run_cli("evaluate", "--run", run)  # the old dataset, still whole, with the model trained on it
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "removing what an interrupted command left" in evaluated.stderr and not glob_any(run, ".data.tmp-*")


def training(small_finished_run, tmp_path) -> tuple[Path, str, subprocess.Popen, object]:
    """A copy of the finished run, its model's fingerprint, `scaleout train` of 200 epochs started on it, and a
    ``ready()`` that reads its log up to the end of the first epoch."""
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(small_finished_run), str(run)], check=True)
    before = tree_fingerprint(run / "model")
    process = start("train", "--run", run, "--epochs", 200, "--batch-size", 64)
    return run, before, process, lambda: "epoch 1/200" in process.stderr.readline()


def test_kill_train_keeps_the_previous_model(small_finished_run, tmp_path):
    run, before, process, epoch_done = training(small_finished_run, tmp_path)
    kill_when(process, epoch_done, "first epoch")
    assert tree_fingerprint(run / "model") == before
    recommended = run_cli("recommend", "--run", run, "--user", "1")
    assert recommended.returncode == 0, recommended.stderr[-2000:]


def test_kill_index_keeps_the_previous_embeddings_and_the_next_run_resumes(small_finished_run, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(small_finished_run), str(run)], check=True)
    before = {part: tree_fingerprint(run / part) for part in ("embeddings", "index")}
    partial = run / ".embeddings.partial"
    process = start("index", "--run", run, "--indexes", "brute_force", "--part-rows", 5, "--no-eval")
    kill_when(process, lambda: (partial / "part-00002.json").is_file(), "third finished part")
    assert {part: tree_fingerprint(run / part) for part in before} == before
    resumed = run_cli("index", "--run", run, "--indexes", "brute_force", "--part-rows", 5, "--no-eval")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming: " in resumed.stderr and not partial.exists()
    recommended = run_cli("recommend", "--run", run, "--user", "1")
    assert recommended.returncode == 0, recommended.stderr[-2000:]
    # The new embeddings are cut into other parts: what was built from the old ones is visibly stale.
    verified = run_cli("verify", "--run", run)
    assert verified.returncode == 1 and "was built from other embeddings" in verified.stderr


def test_kill_export_keeps_the_previous_export(small_finished_run, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(small_finished_run), str(run)], check=True)
    before = tree_fingerprint(run / "export" / "brute_force")
    process = start("export", "--run", run, "--kind", "brute_force", "--exclude-seen")
    kill_when(process, lambda: glob_any(run / "export", ".brute_force.tmp-*"), "temporary export")
    assert tree_fingerprint(run / "export" / "brute_force") == before
    served = run_cli("recommend", "--saved-model", run / "export" / "brute_force", "--user", "1")
    assert served.returncode == 0, served.stderr[-2000:]
    again = run_cli("export", "--run", run, "--kind", "brute_force")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "removing what an interrupted command left" in again.stderr
    assert not glob_any(run / "export", ".brute_force.tmp-*")


def test_sigterm_stops_train_cleanly(small_finished_run, tmp_path):
    """SIGTERM (``ray job stop``, a scheduler, ``kill``) mid-training: the command ends at once with 143 and one line,
    having removed its scratch directories; the previous model stays, and the next command runs."""
    run, before, process, epoch_done = training(small_finished_run, tmp_path)
    deadline = time.monotonic() + 120
    while not epoch_done():
        assert process.poll() is None and time.monotonic() < deadline, "no first epoch"
    mine = f"-{scratch.host_tag()}-{process.pid}-"
    assert any(mine in p.name for p in Path(tempfile.gettempdir()).glob("scaleout-scratch-in-*"))
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == ("scaleout train: stopped by SIGTERM; its scratch directories were "
                                            "removed and its lock released; the next command on the run removes "
                                            "any output it left unfinished")
    assert tree_fingerprint(run / "model") == before
    assert not [p for p in Path(tempfile.gettempdir()).glob("scaleout-scratch-*") if mine in p.name]
    again = run_cli("recommend", "--run", run, "--user", "1")
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_the_main_job_killed_in_training_resumes_and_after_training_keeps_its_model(tmp_path):
    """`scaleout pipeline --resume` with nothing to resume is refused before it prepares anything. Killed after a
    checkpoint, the same command without `--resume` is refused before it prepares the data again
    (RUN/data left as it was), `--resume` with other data settings is refused naming them, and `--resume` reuses
    RUN/data and continues from the checkpoint to the end. Resumed once more (as after a crash in a later stage,
    the checkpoints gone with the saved model), it keeps the model; with other epochs it is refused."""
    import json

    from scaleout.train.checkpoints import RUN_NAME, STATE, latest_checkpoint_state
    from scaleout.train.local import PREFIX

    run = tmp_path / "run"
    job = ("pipeline", "--run", run, *SMALL_RUN, "--epochs", 30, "--batch-size", 64, "--checkpoint-min-interval", 0,
           "--skip", "through_index", "export", "quality")
    nothing = run_cli(*job, "--resume")
    assert nothing.returncode == 1 and not (run / "data").exists()
    assert "--resume: nothing to resume: no checkpoint under" in nothing.stderr
    process = start(*job)
    kill_when(process, (run / "checkpoints" / RUN_NAME / f"{PREFIX}000004" / STATE).is_file, "epoch 4's checkpoint")
    state = latest_checkpoint_state(str(run / "checkpoints"))
    data = tree_fingerprint(run / "data")
    manifest = (run / "data" / "manifest.json").read_bytes()

    again = run_cli(*job)
    assert again.returncode == 1
    assert f"holds checkpoints of an earlier run (epoch {state['epoch']}); pass --resume" in again.stderr
    assert "prepare: wrote" not in again.stderr
    other = run_cli(*job[:-4], "--train-shards", 3, *job[-4:], "--resume")
    assert other.returncode == 1
    assert "was prepared with other settings (train_shards: prepared with 2, now 3)" in other.stderr
    assert tree_fingerprint(run / "data") == data and (run / "data" / "manifest.json").read_bytes() == manifest

    resumed = run_cli(*job, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "prepare: --resume continues on" in resumed.stderr and "prepare: wrote" not in resumed.stderr
    assert f"resuming from the checkpoint of epoch {state['epoch']}/30" in resumed.stderr
    assert (run / "data" / "manifest.json").read_bytes() == manifest
    record = json.loads((run / "metrics" / "train.json").read_text())
    assert record["resumed_at_epochs"] == [state["epoch"]] and len(record["epochs"]) == 30
    assert json.loads(resumed.stdout)["metrics"]  # evaluated, then embedded and indexed
    model = tree_fingerprint(run / "model")

    kept = run_cli(*job, "--resume")
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert "train: --resume keeps" in kept.stderr and "epoch 1/30" not in kept.stderr
    assert tree_fingerprint(run / "model") == model
    longer = run_cli(*job[:-4], "--epochs", 31, *job[-4:], "--resume")
    assert longer.returncode == 1
    assert "was trained with other settings (train.epochs: model 30, now 31) and has no checkpoint" in longer.stderr
