"""`--profile-epoch N`: a TensorFlow profiler trace of one epoch and where its time went (the Ray workers' traces
are checked in tests/test_ray_cluster.py)."""

import json
from pathlib import Path

import pytest

from conftest import run_cli
from scaleout.config import TrainConfig
from scaleout.errors import ConfigError
from scaleout import storage
from scaleout.train.profile import SUMMARY, _own_times, upload

SMALL = ("--source", "synthetic", "--synthetic-users", 200, "--synthetic-items", 100, "--synthetic-interactions", 3000)


def test_an_ops_own_time_leaves_out_the_ops_inside_it():
    # (start, duration, name) on one thread: a function call holding two kernels, then a kernel of its own
    events = [(0, 100, "f:PartitionedCall"), (10, 30, "f/a:MatMul"), (50, 20, "f/b:Exp"), (120, 5, "c:AddV2")]
    assert sorted(_own_times(events)) == sorted([("f:PartitionedCall", 50), ("f/a:MatMul", 30), ("f/b:Exp", 20),
                                                 ("c:AddV2", 5)])
    # nested twice, and an event that starts as its parent ends is not inside it
    events = [(0, 100, "a:A"), (0, 60, "b:B"), (5, 10, "c:C"), (100, 7, "d:D")]
    assert dict(_own_times(events)) == {"a:A": 40, "b:B": 50, "c:C": 10, "d:D": 7}


def test_a_worker_uploads_its_summary_last_and_removes_its_copy(tmp_path, monkeypatch):
    # fetch takes a worker's directory as whole once its summary is there: nothing may follow it
    traced = tmp_path / "traced"
    (traced / "plugins" / "profile" / "run").mkdir(parents=True)
    for rel in ("plugins/profile/run/host.xplane.pb", SUMMARY, "z-after-the-summary-by-name.json"):
        (traced / rel).write_text(rel)
    sent, real = [], storage.upload_file
    monkeypatch.setattr(storage, "upload_file", lambda path, uri: (sent.append(Path(path).name), real(path, uri)))
    upload(traced, str(tmp_path / "store" / "worker-0"))
    assert sent == ["host.xplane.pb", "z-after-the-summary-by-name.json", SUMMARY]
    assert not traced.exists()
    assert (tmp_path / "store" / "worker-0" / "plugins" / "profile" / "run" / "host.xplane.pb").read_text() == \
        "plugins/profile/run/host.xplane.pb"


def test_the_profiled_epoch_must_be_one_of_the_runs_epochs():
    assert TrainConfig(epochs=3, profile_epoch=3).profile_epoch == 3
    for bad in (4, -1):
        with pytest.raises(ConfigError, match=f"profile_epoch must be 0 .none. or an epoch from 1 to 3, got {bad}"):
            TrainConfig(epochs=3, profile_epoch=bad)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    run = tmp_path_factory.mktemp("profiled") / "run"
    for args in (("prepare", "--run", run, *SMALL),
                 ("train", "--run", run, "--epochs", 2, "--batch-size", 256, "--profile-epoch", 2)):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_one_process_traces_the_chosen_epoch_and_sums_its_kernels(profiled):
    run, result = profiled
    profile = json.loads((run / "metrics" / "profile" / "profile.json").read_text())
    assert (profile["format"], profile["epoch"], profile["backend"]) == ("scaleout-profile/1", 2, "local")
    assert profile["train"]["profile_epoch"] == 2 and profile["data"] == str(run / "data")
    [worker] = profile["workers"]
    assert worker["worker"] == 0 and 0 < worker["op_seconds"] and 0 < worker["wall_seconds"]
    assert worker["first_epoch_of_process"] is False and "the first epoch of its process" not in result.stderr
    types = {t["type"]: t for t in worker["by_type"]}
    # the in-batch softmax's product and exponential are among the kernels that ran
    assert any("MatMul" in t for t in types) and "Exp" in types, sorted(types)
    # Each share is its seconds over op_seconds, all three rounded to 4 places: within what the rounding allows.
    e, total = 5e-5, worker["op_seconds"]
    assert all((t["seconds"] - e) / (total + e) - e - 1e-9 <= t["share"] <= (t["seconds"] + e) / (total - e) + e + 1e-9
               for t in worker["by_type"]), (total, worker["by_type"])
    assert sum(t["share"] for t in worker["by_type"]) <= 1.001
    assert all(t["count"] > 0 and t["seconds"] >= 0 for t in worker["by_type"])
    assert list((run / "metrics" / "profile" / "worker-0").rglob("*.xplane.pb")), "no trace for TensorBoard"
    epochs = json.loads((run / "metrics" / "train.json").read_text())["epochs"]
    assert [e.get("profiled", False) for e in epochs] == [False, True]
    assert "profile of epoch 2, worker 0:" in result.stderr


def test_a_directory_not_written_by_scaleout_is_refused_before_training(profiled, tmp_path):
    run, _ = profiled
    before = (run / "model" / "model.json").read_text()
    (run / "metrics" / "profile" / "profile.json").rename(tmp_path / "moved.json")
    try:
        result = run_cli("train", "--run", run, "--epochs", 1, "--batch-size", 256, "--profile-epoch", 1)
    finally:
        (tmp_path / "moved.json").rename(run / "metrics" / "profile" / "profile.json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{run / 'metrics' / 'profile'}: not written by scaleout (no profile.json" in result.stderr
    assert "epoch 1/1" not in result.stderr  # nothing trained
    assert (run / "model" / "model.json").read_text() == before


def test_a_profiled_first_epoch_of_its_process_is_marked_and_warned(tmp_path):
    # Epoch 1, or the first after a resume (a Ray worker restarted from a checkpoint): the trace holds the
    # tracing of the step, so the figures are not the steady step's, and the profile says so.
    run = tmp_path / "run"
    for args in (("prepare", "--run", run, *SMALL),
                 ("train", "--run", run, "--epochs", 1, "--batch-size", 256, "--profile-epoch", 1)):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
    [worker] = json.loads((run / "metrics" / "profile" / "profile.json").read_text())["workers"]
    assert worker["first_epoch_of_process"] is True
    assert "the profiled epoch 1 is the first this process trains" in result.stderr
    assert "profile of epoch 1, worker 0 (the first epoch of its process: tracing included)" in result.stderr
