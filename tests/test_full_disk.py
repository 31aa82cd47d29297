"""A full disk, for real: each command runs in its own mount namespace with a small tmpfs over the run's folder
(as tests/raycluster.py gives the second node its own disk), so the writes fail with ENOSPC as on a full volume."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path


def on_a_small_disk(tmp_path: Path, mib: int, *commands: tuple, copy_in: Path | None = None
                    ) -> tuple[list[int], str, list[str]]:
    """Runs ``commands`` (scaleout's arguments, RUN for the run) one after the other on a ``mib`` MiB tmpfs mounted
    over tmp_path/disk, the run ``copy_in`` copied there first: (each exit status, the last one's stderr, every
    path under RUN after them, relative)."""
    disk, scaleout = tmp_path / "disk", Path(sys.executable).parent / "scaleout"
    disk.mkdir(parents=True)
    steps = [f"{shlex.quote(str(scaleout))} {' '.join(shlex.quote(str(a).replace('RUN', str(disk / 'r'))) for a in c)}"
             f" 2>{tmp_path / 'stderr.txt'}; echo status $?" for c in commands]
    copy = f"cp -r {shlex.quote(str(copy_in))} {disk / 'r'} && " if copy_in else ""
    script = f"mount -t tmpfs -o size={mib}m tmpfs {disk} && {copy}" + " && ".join(
        f"{{ {s}; }}" for s in steps) + f" && {{ cd {disk}/r 2>/dev/null && find . | sort || true; }}"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          text=True, timeout=600)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = [int(line.split()[1]) for line in lines if line.startswith("status ")]
    return statuses, (tmp_path / "stderr.txt").read_text(), [p for p in lines if p.startswith(".")]


def on_tmpfs_mib(root: Path) -> float:
    """What the files under ``root`` take on a tmpfs, in MiB: each file's size rounded up to whole 4 KiB pages."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in root.rglob("*") if p.is_file()) / 2**20


def error_line(stderr: str, command: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(f"scaleout {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_prepare_on_a_full_disk_says_where_room_is_short_and_leaves_nothing(tmp_path):
    statuses, stderr, left = on_a_small_disk(tmp_path, 1, ("prepare", "--run", "RUN", "--source", "synthetic",
                                                           "--synthetic-interactions", 300_000))
    line = error_line(stderr, "prepare")
    assert statuses == [1] and "No space left on device" in line
    assert f"free space, its unfinished output removed: the run's ({tmp_path / 'disk'}) " in line
    assert "the temporary directory's" in line
    assert left == []  # no run folder at all: prepare writes beside it, then renames


def test_a_checkpoint_the_disk_cannot_hold_ends_training_in_one_line_and_is_not_left_half_written(tmp_path):
    from conftest import run_cli

    # the disk holds the data and about half a checkpoint: the towers' variables (the checkpoint holds them and an
    # Adagrad slot for each), measured by training on this disk first. Epoch 1's checkpoint is kept however short
    # the epoch (--checkpoint-min-interval 0): at the default 2 s it was kept only on a host slow enough (CI saw
    # the first checkpoint fail, as did this host with epoch 1 at 2.4 s; earlier runs had skipped it)
    measured = tmp_path / "measured"
    for args in (("prepare", "--run", measured, "--source", "synthetic", "--synthetic-interactions", 20_000),
                 ("train", "--run", measured, "--epochs", 1)):
        assert run_cli(*args).returncode == 0
    variables = sum(on_tmpfs_mib(measured / "model" / f"{side}_tower" / "variables") for side in ("query", "candidate"))
    assert variables > 2, variables  # room to fall inside the checkpoint's writes
    size = round(on_tmpfs_mib(measured / "data") + variables + 0.5)
    statuses, stderr, left = on_a_small_disk(
        tmp_path, size, ("prepare", "--run", "RUN", "--source", "synthetic", "--synthetic-interactions", 20_000),
        ("train", "--run", "RUN", "--epochs", 2, "--checkpoint-min-interval", 0))
    line = error_line(stderr, "train")
    assert statuses == [0, 1], stderr[-3000:]
    assert "checkpoint_local-000001/" in line and "No space left on device" in line and "{{function_node" not in line
    assert f"free space, its unfinished output removed: the run's ({tmp_path / 'disk' / 'r'}) " in line
    assert not any("checkpoint_local" in p for p in left) and "./data/manifest.json" in left and "./model" not in left


def test_an_index_the_disk_cannot_hold_ends_in_one_line_naming_the_file_and_leaves_the_indexes_before_it(tmp_path):
    from conftest import run_cli

    trained = tmp_path / "trained"
    for args in (("prepare", "--run", trained, "--source", "synthetic", "--synthetic-interactions", 20_000),
                 ("train", "--run", trained, "--epochs", 1)):
        assert run_cli(*args).returncode == 0
    # the disk sizes come from an index built on this disk: the trained run and the embeddings, then half of
    # BruteForce's array (numpy's "N requested and M written", no errno), or all of it and half of ScaNN's searcher
    measured = tmp_path / "measured" / "run"
    shutil.copytree(trained, measured)
    assert run_cli("index", "--run", measured).returncode == 0
    before = on_tmpfs_mib(trained) + on_tmpfs_mib(measured / "embeddings")
    brute, scann = on_tmpfs_mib(measured / "index" / "brute_force"), on_tmpfs_mib(measured / "index" / "scann")
    assert brute > 2 and scann > 2, (brute, scann)  # room to fall inside each index's writes
    _, stderr, left = on_a_small_disk(tmp_path, round(before + brute / 2 + 0.5), ("index", "--run", "RUN"),
                                      copy_in=trained)
    line = error_line(stderr, "index")
    assert "[Errno 28] No space left on device? A write was cut short (" in line
    assert "/index/.brute_force.tmp-" in line
    assert "embeddings.npy'; free space, its unfinished output removed: the run's" in line
    assert not any(p.startswith("./index/") for p in left), left
    _, stderr, left = on_a_small_disk(tmp_path / "again", round(before + brute + scann / 2 + 0.5),
                                      ("index", "--run", "RUN"), copy_in=trained)
    line = error_line(stderr, "index")
    assert "[Errno 5] ScaNN could not write its searcher (" in line and "is the disk full?" in line
    assert f"'{tmp_path / 'again' / 'disk' / 'r' / 'index' / 'scann'}'; free space, its unfinished output removed: " \
        "the run's" in line
    assert "./index/brute_force/index.json" in left and not any(p.startswith("./index/scann") for p in left), left
