"""benchmarks/core_contention.py: one run's epochs with the other core working and idle."""

import json
import subprocess
import sys

import pytest
from benchscripts import BENCHMARKS, load

SCRIPT = BENCHMARKS / "core_contention.py"


@pytest.fixture(scope="module")
def script():
    return load("core_contention")


def test_an_epoch_counts_only_inside_one_window_after_the_margin(script):
    windows = [(0.0, 8.0, True), (8.0, 16.0, False), (16.0, 24.0, True)]
    epochs = [(1.0, 2.5),    # busy
              (0.1, 1.0),    # within the margin after the switch: neither
              (7.5, 8.5),    # across a switch: neither
              (9.0, 10.0),   # idle
              (15.9, 16.2),  # across
              (20.0, 23.9),  # busy
              (23.0, 25.0)]  # past the last window
    got = script.classify(epochs, windows, margin=0.3)
    assert got == {"busy": [1.5, pytest.approx(3.9)], "idle": [1.0]}


def test_spans_leave_out_the_first_epoch_and_end_at_ended_at(script):
    history = [{"seconds": 5.0, "ended_at": 105.0}, {"seconds": 1.5, "ended_at": 106.5},
               {"seconds": 2.0, "ended_at": 108.6}]
    assert script.spans(history) == [(105.0, 106.5), (pytest.approx(106.6), 108.6)]


def test_the_summary_gives_the_ratio_only_where_both_sides_have_epochs(script):
    assert script.summary({"busy": [2.0, 2.2, 2.1], "idle": [2.0, 1.9]})["busy_over_idle"] == pytest.approx(1.077,
                                                                                                            abs=1e-3)
    assert script.summary({"busy": [2.0], "idle": []})["busy_over_idle"] is None


def test_a_run_with_no_epoch_inside_a_window_is_refused_with_the_every_that_would_hold_one(script):
    windows = [(0.0, 1.5, True), (1.5, 3.0, False), (3.0, 4.5, True)]
    epochs = [(0.2, 1.6), (1.6, 2.9), (2.9, 4.3)]  # 1.3-1.4 s each: none fits 1.5 s less the margin
    got = script.classify(epochs, windows, margin=0.3)
    reason = script.unfit_windows(epochs, got, every=1.5, margin=0.3)
    assert "median epoch took 1.40 s" in reason and "at most 1.20 s" in reason and "--every 4 or more" in reason
    assert script.unfit_windows(epochs, {"busy": [1.3], "idle": []}, every=1.5) is None
    assert "no epoch after its first" in script.unfit_windows([], {"busy": [], "idle": []}, every=1.5)


def test_the_script_exits_non_zero_naming_the_windows_when_no_epoch_fits(tmp_path):
    out = tmp_path / "core_contention.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--batch", "1024", "--epochs", "3", "--every", "0.5",
                          "--warm", "3", "--runs", "one process", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    assert "batch 1,024, one process: no epoch fitted inside one of the load's windows" in run.stderr
    assert not out.exists()
    too_short = subprocess.run([sys.executable, str(SCRIPT), "--every", "0.3", "--out", str(out)],
                               capture_output=True, text=True, timeout=120)
    assert too_short.returncode == 2 and "a window must be longer than the 0.3 s margin" in too_short.stderr


@pytest.mark.slow
def test_the_script_measures_both_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / "core_contention.json"
    # Windows of 5 s: an epoch counts only inside one (after the margin), and at 128 dimensions one epoch on
    # one core took 1.2-1.5 s on the slowest host met (1.5 s windows held none there); 24 epochs span several.
    run = subprocess.run([sys.executable, str(SCRIPT), "--batch", "1024", "--epochs", "24", "--every", "5",
                          "--warm", "8", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = json.loads(out.read_text())["by_batch"]["1024"]
    assert set(runs) == {"one process", "1 Ray worker"}
    for figures in runs.values():
        assert figures["epochs_busy"] + figures["epochs_idle"] > 0
        assert all(s > 0 for s in figures["seconds"]["busy"] + figures["seconds"]["idle"])
    assert "| 1,024 | one process |" in run.stdout and "| 1,024 | 1 Ray worker |" in run.stdout
