"""Bad input through the `scaleout` command: one-line error, non-zero exit, nothing written."""

import pytest

from conftest import ctrl_c_at, run_cli


def test_unknown_source_is_refused_by_the_parser(tmp_path):
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "netflix")
    assert result.returncode == 2 and "invalid choice: 'netflix'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id\nu1,i1\nu2\n", "events.csv, line 3: expected 2 fields separated by ',', found 1"),
    ("user_id,item_id,rating\nu1,i1,5\nu2,i2,five\n", "events.csv, line 3: field 'rating' is 'five'; expected a number"),
    ("uid,item_id\nu1,i1\n", "missing column(s) ['user_id']"),
])
def test_malformed_input_exits_non_zero_and_writes_nothing(tmp_path, content, message):
    (tmp_path / "events.csv").write_text(content)
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "generic", "--path", tmp_path / "events.csv")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    run = tmp_path / "run"
    assert not run.exists() or list(run.iterdir()) == []  # no dataset, no temporary leftovers


def test_missing_directory_and_missing_stages_are_explained(tmp_path):
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "movielens", "--path", tmp_path / "nowhere")
    assert result.returncode == 1 and "nowhere: no such file or directory" in result.stderr
    result = run_cli("train", "--run", tmp_path / "run", "--epochs", "1")
    assert result.returncode == 1 and "not a prepared dataset" in result.stderr and "scaleout prepare" in result.stderr


def test_out_of_range_settings_are_refused(tmp_path):
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "synthetic", "--test-fraction", "1.5")
    assert result.returncode == 1 and "test_fraction must be in (0, 1)" in result.stderr


@pytest.mark.parametrize("args, message", [
    (("recommend", "--run", "RUN", "--user", "42", "-k", "-1", "--exclude-seen"), "argument -k: -1 is below 1"),
    (("recommend", "--saved-model", "EXPORT", "--user", "42", "-k", "0"), "argument -k: 0 is below 1"),
    (("export", "--run", "RUN", "-k", "ten"), "argument -k: 'ten' is not a whole number"),
    (("index", "--run", "RUN", "--part-rows", "0"), "argument --part-rows: 0 is below 1"),
    (("index", "--run", "RUN", "--reorder", "-5"), "argument --reorder: -5 is below 0"),
    (("train", "--run", "RUN", "--epochs", "0"), "argument --epochs: 0 is below 1"),
    (("pipeline", "--run", "RUN", "--export-k", "-3"), "argument --export-k: -3 is below 1"),
    (("prepare", "--run", "RUN", "--train-shards", "0"), "argument --train-shards: 0 is below 1"),
])
def test_counts_are_checked_when_the_command_line_is_parsed(tmp_path, args, message):
    result = run_cli(*[str(tmp_path / a) if a in ("RUN", "EXPORT") else a for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "RUN").exists()


def test_training_and_exporting_print_progress_not_library_noise(tmp_path):
    """What a user reads on the terminal is their run: epochs and stages, not TensorFlow's or Keras' notes on
    saving, nor (on a machine without a GPU) CUDA's."""
    from conftest import SMALL_RUN

    from scaleout.tfenv import SAVE_NOISE, has_nvidia_device

    run = tmp_path / "run"
    printed = ""
    for args in (("prepare", *SMALL_RUN), ("train", "--epochs", 1, "--batch-size", 512), ("export", "-k", 5)):
        result = run_cli(args[0], "--run", run, *args[1:])
        assert result.returncode == 0, result.stderr[-3000:]
        printed += result.stdout + result.stderr
    assert "epoch 1/1" in printed and "exported the brute_force retrieval model" in printed
    for noise in SAVE_NOISE:
        assert noise not in printed, noise
    if not has_nvidia_device():
        assert "cuInit" not in printed


def test_a_full_disk_error_says_how_much_room_the_runs_disk_and_the_temporary_ones_have(tmp_path):
    import os
    import re
    import shutil
    import tempfile

    from scaleout.cli.ending import disks_free

    # a run not written yet is on the disk of its nearest existing folder; the temporary directory's disk is named
    # too, unless it is the same disk
    run = tmp_path / "runs" / "r"
    said = disks_free(str(run))
    free = shutil.disk_usage(tmp_path).free / 2**20
    match = re.fullmatch(r"free space, its unfinished output removed: the run's \((.+?)\) ([\d,.]+) MiB of "
                         r"([\d,.]+) MiB(.*)", said)
    assert match and match.group(1) == str(tmp_path.resolve()), said
    assert abs(float(match.group(2).replace(",", "")) - free) < 64, said  # other processes write meanwhile
    same = os.stat(tmp_path).st_dev == os.stat(tempfile.gettempdir()).st_dev
    assert (match.group(4) == "") == same, said
    # a run in the object store has no local disk: the temporary directory's alone
    assert disks_free("s3://bucket/runs/r").startswith(
        f"free space, its unfinished output removed: the temporary directory's ({tempfile.gettempdir()})")


def test_ctrl_c_ends_training_in_one_line_with_status_130_and_keeps_its_checkpoints(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    assert run_cli("prepare", "--run", run, "--source", "synthetic", "--synthetic-interactions", 50_000).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    train = subprocess.Popen([str(Path(sys.executable).parent / "scaleout"), "train", "--run", str(run), "--epochs",
                              "10000", "--checkpoint-min-interval", "0"], stderr=subprocess.PIPE, text=True, env=env)
    said, rest, status = ctrl_c_at(train, "checkpoint of epoch 1 written")  # Ctrl-C once the first one is written
    ours = [line for line in rest.splitlines() if line.startswith("scaleout train:")]
    assert status == 130 and "Traceback" not in rest, said[-2000:] + rest[-3000:]
    assert ours == ["scaleout train: interrupted; what it finished stays, and the next command on the run removes "
                    "any output it left unfinished; `scaleout train --resume` (or `jobs/train.py --resume`) continues "
                    "from the newest checkpoint"]
    kept = sorted(p.name for p in (run / "checkpoints" / "train").iterdir())
    assert kept and all((run / "checkpoints" / "train" / k / "state.json").is_file() for k in kept), kept
    assert not (run / "model").exists()


INTERRUPTED_LINE = ("prog: interrupted; what it finished stays, and the next command on the run removes any output it "
                    "left unfinished")


def interrupted_child(script: str):
    """``script`` run in a fresh Python: it ended with status 130 and the one interrupted line on its stderr."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr.splitlines() == [INTERRUPTED_LINE], done.stdout + done.stderr
    return done


LOST_IN_A_FINALISER = r"""
import os, signal, sys, time
from scaleout.cli.ending import reported

class Finalised:
    def __del__(self):  # Ctrl-C arrives while an object is finalised (as TensorFlow's iterators are at an epoch's end):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # Python raises the KeyboardInterrupt here, and ignores it: "Exception ignored in"
            pass

def work():
    Finalised()
    for _ in range(300):  # 30 s of work that a Ctrl-C ends
        time.sleep(0.1)
    print("finished", flush=True)

sys.exit(reported("prog", work, None))
"""


def test_a_ctrl_c_raised_in_a_finaliser_still_ends_the_command_in_one_line():
    """Python ignores an exception raised in a __del__, a Ctrl-C's KeyboardInterrupt too (CI once saw a benchmark
    train on past its Ctrl-C): reported interrupts the main thread again."""
    assert "finished" not in interrupted_child(LOST_IN_A_FINALISER).stdout


LOST_WHILE_UNWINDING = r"""
import sys, time
from scaleout.cli.ending import reported

class Finalised:
    def __del__(self):  # a second Ctrl-C, landing in a finaliser while the first one unwinds the command
        raise KeyboardInterrupt

def work():
    held = Finalised()
    try:
        raise KeyboardInterrupt  # the first Ctrl-C
    finally:
        del held

status = reported("prog", work, None)
time.sleep(1.0)  # the process goes on after the command's line (as tests and scripts that call reported do)
print("went on", flush=True)
sys.exit(status)
"""


def test_a_ctrl_c_lost_while_the_command_unwinds_does_not_land_after_its_line():
    """The interruption put off from the finaliser is cancelled when the command ends: it would otherwise raise a
    KeyboardInterrupt (with a traceback) in whatever the process does after the command's one line."""
    assert interrupted_child(LOST_WHILE_UNWINDING).stdout == "went on\n"
