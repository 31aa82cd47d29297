"""benchmarks/checkpoint_cadence.py: a checkpoint every epoch against the least interval between them."""

import json
import subprocess
import sys

import pytest
from benchscripts import BENCHMARKS, load

SCRIPT = BENCHMARKS / "checkpoint_cadence.py"


def test_a_runs_figures_come_from_its_history():
    script = load("checkpoint_cadence")
    history = [{"epoch": 1, "seconds": 3.0, "ended_at": 103.0, "examples_per_second": 10.0,
                "checkpoint_stall_seconds": 0.05},
               {"epoch": 2, "seconds": 1.0, "ended_at": 104.1, "examples_per_second": 30.0,
                "checkpoints_within": 2, "checkpoint_within_stall_seconds": 0.5},
               {"epoch": 3, "seconds": 1.0, "ended_at": 105.2, "examples_per_second": 30.0,
                "checkpoint_stall_seconds": 0.07, "checkpoints_within": 1, "checkpoint_within_stall_seconds": 0.1},
               {"epoch": 4, "seconds": 1.0, "ended_at": 106.3, "examples_per_second": 32.0}]
    got = script.figures(history, returned_at=110.3, fit_seconds=20.0)
    assert got["tail_seconds"] == pytest.approx(4.0) and got["epoch_seconds"] == pytest.approx(6.0)
    assert got["checkpoints"] == 3 and got["checkpointed_epochs"] == [1, 3, 4]
    assert got["median_stall_seconds"] == pytest.approx(0.06) and got["examples_per_second"] == 30.0
    assert got["within"] == 3 and got["mean_within_stall_seconds"] == pytest.approx(0.2)
    assert script.figures(history[:1], returned_at=104.0, fit_seconds=5.0)["mean_within_stall_seconds"] is None


@pytest.mark.slow
def test_the_script_trains_each_cadence_and_writes_its_figures(tmp_path):
    out = tmp_path / "checkpoint_cadence.json"
    # ml-100k's epochs are 78 steps of 1,024: a checkpoint at step 40 of each (the first call at or past it).
    run = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "5", "--rounds", "1", "--every-steps", "40",
                          "--within-min-interval", "0", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    every, default, within = result["runs"].values()
    # With no least interval every epoch is checkpointed; with it, the epochs kept are a subset with the last.
    assert every[0]["checkpointed_epochs"] == [1, 2, 3, 4, 5]
    assert every[0]["within"] == default[0]["within"] == 0 and every[0]["mean_within_stall_seconds"] is None
    # Every 40 steps and no least interval: one within each epoch, besides every epoch's end.
    assert within[0]["within"] == 5 and within[0]["checkpointed_epochs"] == [1, 2, 3, 4, 5]
    assert within[0]["mean_within_stall_seconds"] > 0
    assert set(default[0]["checkpointed_epochs"]) <= {1, 2, 3, 4, 5} and default[0]["checkpointed_epochs"][-1] == 5
    for runs in result["runs"].values():
        assert runs[0]["fit_seconds"] > runs[0]["epoch_seconds"] > 0 and runs[0]["tail_seconds"] > 0
    assert "| every epoch (min interval 0) |" in run.stdout
    assert "| and every 40 steps within epochs (min interval 0 s) |" in run.stdout
