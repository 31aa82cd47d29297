"""Writing whole or not at all, and never replacing a directory scaleout did not write."""

import os

import pytest

from conftest import run_cli
from scaleout.errors import ArtifactError
from scaleout.fsutil import atomic_dir, tree_fingerprint

MARKER = "manifest.json"


def test_a_directory_of_someone_elses_files_is_refused_before_any_work(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "events.csv").write_text("user_id,item_id\n")
    (final / "notes.txt").write_text("mine")
    before = tree_fingerprint(final)
    worked = []
    with pytest.raises(ArtifactError, match=r"out: not written by scaleout \(no manifest.json; it holds events.csv, "
                                            r"notes.txt\); refusing to replace it"):
        with atomic_dir(final, MARKER) as tmp:
            worked.append(tmp)
    assert worked == [] and tree_fingerprint(final) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary leftovers


def test_an_empty_directory_or_one_of_the_same_kind_is_replaced_and_force_replaces_anything(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    for content in ("first", "second"):  # empty first, then the one the first write left
        with atomic_dir(final, MARKER) as tmp:
            (tmp / MARKER).write_text(content)
        assert (final / MARKER).read_text() == content
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ArtifactError, match="exists and is not a directory"):
        with atomic_dir(tmp_path / "file", MARKER):
            pass
    (final / MARKER).unlink()
    (final / "notes.txt").write_text("mine")
    with atomic_dir(final, MARKER, force=True) as tmp:
        (tmp / MARKER).write_text("forced")
    assert sorted(p.name for p in final.iterdir()) == [MARKER]


def test_prepare_out_keeps_a_users_folder_unless_forced(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "events.csv").write_text("user_id,item_id\nu1,i1\n")
    args = ("prepare", "--out", folder, "--source", "synthetic", "--synthetic-interactions", 2000)
    refused = run_cli(*args)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "mine: not written by scaleout (no manifest.json; it holds events.csv)" in refused.stderr
    assert "--force" in refused.stderr and (folder / "events.csv").read_text() == "user_id,item_id\nu1,i1\n"
    again = run_cli(*args, "--force")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (folder / "manifest.json").is_file() and not (folder / "events.csv").exists()
    replaced = run_cli(*args)  # now it is a dataset scaleout wrote: replaced without --force
    assert replaced.returncode == 0, replaced.stderr[-2000:]


def test_one_writer_per_run_and_leftovers_of_killed_writers_are_removed(tmp_path):
    from scaleout.rundir import RunDir, writing

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    with writing(run, "scaleout train"):
        busy = run_cli("evaluate", "--run", run.root)
        assert busy.returncode == 1 and "Traceback" not in busy.stderr
        assert f"{run.root} is in use by pid {os.getpid()}" in busy.stderr and "(scaleout train, started " in busy.stderr
    # What `kill -9` in the middle of a stage leaves: temporary directories and files beside the outputs.
    (run.root / ".model.tmp-0badc0de").mkdir()
    (run.root / "metrics").mkdir()
    (run.root / "metrics" / ".train.json.tmp-0badc0de").write_text("{")
    (run.root / ".embeddings.partial").mkdir()  # resumable: kept
    after = run_cli("evaluate", "--run", run.root)
    assert after.returncode == 1 and "not a prepared dataset" in after.stderr  # the lock was free: it ran
    assert "removing what an interrupted command left" in after.stderr and ".model.tmp-0badc0de" in after.stderr
    assert sorted(p.name for p in run.root.rglob("*")) == [".embeddings.partial", "metrics"]


def _own_cache(monkeypatch, root):
    """fsutil's checksum cache opened afresh under ``root`` (the tests' home may be anything)."""
    from scaleout import fsutil

    monkeypatch.setenv("SCALEOUT_CACHE_DIR", str(root))
    monkeypatch.setattr(fsutil, "_CACHE", fsutil.ChecksumCache())
    return fsutil


def test_files_hashed_by_their_writer_are_not_read_again_once_renamed(tmp_path, monkeypatch):
    import hashlib

    fsutil = _own_cache(monkeypatch, tmp_path / "cache")
    with fsutil.atomic_dir(tmp_path / "set", "manifest.json") as tmp:  # a directory renamed into place
        (tmp / "a").mkdir()
        (tmp / "a" / "x.bin").write_bytes(os.urandom(100_000))
        (tmp / "manifest.json").write_text("{}")
        recorded = fsutil.checksums(tmp)
    part = tmp_path / ".part.tmp-1"  # a file renamed into place, as an embedding part is
    part.write_bytes(os.urandom(1000))
    digest = fsutil.sha256(part)
    os.replace(part, tmp_path / "part")
    fsutil.moved(part, tmp_path / "part")

    def read(*args, **kwargs):
        raise AssertionError(f"read again: {args}")

    monkeypatch.setattr(fsutil, "open", read, raising=False)  # fsutil.sha256 reads with open()
    assert fsutil.checksums(tmp_path / "set") == recorded and fsutil.sha256(tmp_path / "part") == digest
    monkeypatch.undo()
    # written again under its new name, a file is read again: its state (size, mtime, inode) is another
    (tmp_path / "set" / "a" / "x.bin").write_bytes(b"other")
    assert fsutil.checksums(tmp_path / "set")["a/x.bin"]["sha256"] == hashlib.sha256(b"other").hexdigest()


def test_a_cache_that_cannot_be_opened_leaves_every_file_hashed_each_time(tmp_path, monkeypatch):
    import hashlib

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache's folder would be")
    fsutil = _own_cache(monkeypatch, blocked / "scaleout")
    part = tmp_path / ".part.tmp-1"
    part.write_bytes(b"rows")
    assert fsutil.sha256(part) == hashlib.sha256(b"rows").hexdigest()
    os.replace(part, tmp_path / "part")
    fsutil.moved(part, tmp_path / "part")  # nothing to carry, and no error
    reads = []
    real_open = open
    monkeypatch.setattr(fsutil, "open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k), raising=False)
    assert fsutil.sha256(tmp_path / "part") == hashlib.sha256(b"rows").hexdigest()
    assert reads == [tmp_path / "part"]  # read again: no cache remembered it
    assert fsutil._CACHE._db is False
