"""The local backend's checkpoints: `scaleout train` in one process, killed with `kill -9` after five epochs, is
refused a fresh start over its checkpoints and a resume with other settings, and continues with `--resume` (on
its data prepared again from the same source) to train what the uninterrupted run trains; once the model is
saved its checkpoints are gone, and a --resume to train it longer is refused naming the model."""

import json
import shutil

from conftest import SMALL_RUN, run_cli
from test_kill import kill_when, start
from scaleout.train.checkpoints import RUN_NAME, STATE, complete_checkpoints, latest_checkpoint_state
from scaleout.train.local import PREFIX

TRAIN = ("--epochs", 30, "--batch-size", 64, "--checkpoint-min-interval", 0)


def losses(run) -> dict[int, float]:
    return {e["epoch"]: e["loss_per_example"] for e in json.loads((run / "metrics" / "train.json").read_text())["epochs"]}


def test_a_killed_local_run_resumes_where_its_last_checkpoint_left_it(tmp_path):
    prepared = tmp_path / "prepared"
    result = run_cli("prepare", "--run", prepared, *SMALL_RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for run in (whole, killed):
        shutil.copytree(prepared, run)

    result = run_cli("train", "--run", whole, *TRAIN)  # the uninterrupted run
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoint of epoch 30 written" in result.stderr
    assert not list((whole / "checkpoints").glob(f"{RUN_NAME}/{PREFIX}*"))  # removed once the model was saved

    process = start("train", "--run", killed, *TRAIN)
    fifth = killed / "checkpoints" / RUN_NAME / f"{PREFIX}000005" / STATE
    kill_when(process, fifth.is_file, "the fifth epoch's checkpoint")
    location = str(killed / "checkpoints")
    state = latest_checkpoint_state(location)
    assert state is not None and 5 <= state["epoch"] < 30
    # The older ones are removed as newer ones are written: the newest two remain, three if the kill came between
    # the newest's state.json and the removal of the oldest.
    kept = [s["epoch"] for _, s in complete_checkpoints(location)]
    assert kept[-1] == state["epoch"] and kept[0] >= state["epoch"] - 2, kept
    assert not (killed / "model").exists()

    fresh = run_cli("train", "--run", killed, *TRAIN)
    assert fresh.returncode == 1
    assert f"holds checkpoints of an earlier run (epoch {state['epoch']}); pass --resume" in fresh.stderr
    other = run_cli("train", "--run", killed, *TRAIN, "--resume", "--learning-rate", 0.05)
    assert other.returncode == 1
    assert "was trained with other settings (model.learning_rate: checkpoint 0.1, now 0.05)" in other.stderr

    # The same source prepared again with the same settings is the same data (by what it holds, not when it was
    # written): the run continues on it.
    manifest = (killed / "data" / "manifest.json").read_bytes()
    again = run_cli("prepare", "--run", killed, *SMALL_RUN)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (killed / "data" / "manifest.json").read_bytes() != manifest  # written again, at another time

    resumed = run_cli("train", "--run", killed, *TRAIN, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from the checkpoint of epoch {state['epoch']}/30" in resumed.stderr
    record = json.loads((killed / "metrics" / "train.json").read_text())
    assert record["resumed_at_epochs"] == [state["epoch"]]
    got, want = losses(killed), losses(whole)
    assert sorted(got) == list(range(1, 31))
    # the epochs trained after the resume: the same weights, optimizer state and input as the uninterrupted run's
    for epoch in range(state["epoch"] + 1, 31):
        assert abs(got[epoch] - want[epoch]) <= 1e-5 * abs(want[epoch]), (epoch, got[epoch], want[epoch])
    assert not (killed / "checkpoints" / RUN_NAME).exists()
    assert (killed / "model").is_dir() and (killed / "metrics" / "eval.json").is_file()

    # A finished run has no checkpoint left: --resume to train it for longer is refused, naming the model it holds
    model = sorted(p.read_bytes() for p in (killed / "model").rglob("*") if p.is_file())
    longer = run_cli("train", "--run", killed, "--epochs", 40, "--batch-size", 64, "--resume")
    assert longer.returncode == 1
    assert (f"--resume: no checkpoint to resume from under {killed / 'checkpoints'}/{RUN_NAME}: {killed / 'model'} "
            "holds the model this run trained (30 epochs, backend local) and its checkpoints are gone") in longer.stderr
    assert sorted(p.read_bytes() for p in (killed / "model").rglob("*") if p.is_file()) == model


def test_checkpoints_within_an_epoch_are_refused_by_the_local_backend(tmp_path):
    run = tmp_path / "run"
    assert run_cli("prepare", "--run", run, *SMALL_RUN).returncode == 0
    result = run_cli("train", "--run", run, "--epochs", 1, "--checkpoint-every-steps", 10)
    assert result.returncode == 1
    assert "--checkpoint-every-steps: checkpoints within an epoch are the Ray backend's" in result.stderr
    assert not (run / "model").exists()

