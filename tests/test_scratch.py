"""Scratch directories: removed when their block ends, and swept once their process has ended without removing them
(a Ray worker ended by Ray, kill -9); nothing else in the temporary directory is touched."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from scaleout import scratch
from scaleout.errors import stop_on_sigterm


def test_a_scratch_directory_is_removed_when_its_block_ends_or_fails(tmp_path):
    with scratch.scratch("in", tmp_path) as made:
        (made / "file").write_text("x")
        assert made.parent == tmp_path and made.name.startswith("scaleout-scratch-in-")
    assert not made.exists()
    with pytest.raises(RuntimeError), scratch.scratch("in", tmp_path) as failed:
        raise RuntimeError("boom")
    assert not failed.exists()


def holder(tmp_path) -> subprocess.Popen:
    """A process that makes a scratch directory in ``tmp_path``, prints its name, and waits."""
    code = textwrap.dedent(f"""
        import sys, time
        from scaleout import scratch
        path = scratch.make("worker", {str(tmp_path)!r})
        (path / "shard.parquet").write_bytes(b"x" * 1000)
        print(path.name, flush=True)
        time.sleep(600)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_what_a_killed_process_left_is_swept_and_nothing_else(tmp_path):
    killed, alive = holder(tmp_path), holder(tmp_path)
    try:
        killed_dir = tmp_path / killed.stdout.readline().strip()
        alive_dir = tmp_path / alive.stdout.readline().strip()
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert killed_dir.is_dir() and str(killed.pid) in killed_dir.name  # nothing ran on its way out
        # Look-alikes scaleout did not make, or made on another host: left as they are.
        mine = tmp_path / "scaleout-scratch-notes"
        other_host = tmp_path / f"scaleout-scratch-worker-00000000-{killed.pid}-1-abc"
        if scratch.host_tag() == "00000000":
            other_host = tmp_path / f"scaleout-scratch-worker-11111111-{killed.pid}-1-abc"
        for d in (mine, other_host):
            d.mkdir()
            (d / "keep").write_text("x")
        assert scratch.owner_alive(killed_dir.name) is False and scratch.owner_alive(alive_dir.name) is True
        assert scratch.owner_alive(mine.name) is None and scratch.owner_alive(other_host.name) is None

        with scratch.scratch("in", tmp_path) as made:  # the next one made here sweeps first
            assert not killed_dir.exists()
            assert alive_dir.is_dir() and (alive_dir / "shard.parquet").is_file()
            assert (mine / "keep").is_file() and (other_host / "keep").is_file()
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
                [alive_dir.name, mine.name, other_host.name, made.name])
    finally:
        for p in (killed, alive):
            p.kill()
            p.wait()
    assert scratch.sweep(tmp_path) == [alive_dir]  # its process has ended now


def test_a_process_id_reused_by_another_process_does_not_keep_a_directory(tmp_path):
    # Same id, another start time: the directory's process ended and the id went to another one.
    pid, start = os.getpid(), scratch.process_start(os.getpid())
    assert start is not None and scratch.process_start(pid) == start
    stale = tmp_path / f"scaleout-scratch-worker-{scratch.host_tag()}-{pid}-{start + 1}-abc"
    stale.mkdir()
    assert scratch.owner_alive(stale.name) is False
    assert scratch.sweep(tmp_path) == [stale] and not stale.exists()


def test_a_purpose_is_lower_case_letters(tmp_path):
    with pytest.raises(ValueError, match="lower-case letters"):
        scratch.make("in-1", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_undoes_what_was_registered_prints_one_line_and_exits_143(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from scaleout import scratch
        from scaleout.errors import stop_on_sigterm, undone_at_stop
        log = Path({str(tmp_path / "log")!r})
        with stop_on_sigterm("scaleout train"), scratch.scratch("in", {str(tmp_path)!r}) as made:
            with undone_at_stop(lambda: log.open("a").write("first registered\\n")):
                with undone_at_stop(lambda: log.open("a").write("second registered\\n")):
                    pass  # ended: no longer undone at a stop
                with undone_at_stop(lambda: log.open("a").write("third registered\\n")):
                    (made / "fetched.parquet").write_bytes(b"x")
                    print(made.name, flush=True)
                    time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    made = tmp_path / process.stdout.readline().strip()
    assert made.is_dir() and (made / "fetched.parquet").is_file()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("scaleout train: stopped by SIGTERM; its scratch directories were removed"), err
    assert not made.exists()
    assert (tmp_path / "log").read_text().splitlines() == ["third registered", "first registered"]


def test_outside_the_block_sigterm_is_as_before():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm("scaleout train"):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_releases_a_runs_lock_in_a_store(tmp_path):
    # hold_remote's lock object (here on a local path, as in a store): deleted at the stop, not left to go stale
    run = tmp_path / "run"
    run.mkdir()
    code = textwrap.dedent(f"""
        import time
        from scaleout.errors import stop_on_sigterm
        from scaleout.runlock import hold_remote
        with stop_on_sigterm("scaleout train"), hold_remote({str(run)!r}, "scaleout train"):
            print("held", flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    assert (run / ".scaleout.lock").is_file()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert not (run / ".scaleout.lock").exists()
