"""Where the stages of one run keep their outputs (the `--run DIR` layout).

  RUN/data/                  prepared dataset (scaleout.data.prepare)
  RUN/model/                 trained towers: query_tower/, candidate_tower/ (Keras
                             SavedModels) and model.json (settings, vocab sizes)
  RUN/metrics/train.json     per-epoch loss, seconds and examples/s of the last fit
  RUN/metrics/eval.json      test metrics, named as TFRS names them
  RUN/embeddings/            candidate embeddings, Parquet parts + embeddings.json
                             (scaleout.embed)
  RUN/index/scann/           ScaNN index (scaleout.index.scann); RUN/index/brute_force/ too
  RUN/metrics/index_eval.json  FactorizedTopK through each index, side by side
  RUN/metrics/quality.json   hit rate and NDCG with and without seen items, beside the baselines
  RUN/export/scann/          retrieval SavedModels (TFRS ScaNN / BruteForce layers):
  RUN/export/brute_force/    raw user id in; scores, movie ids, titles out
  RUN/artifacts.json         fingerprints and links of all of the above
  RUN/checkpoints/           Ray Train's checkpoints (backend ray)

RUN may be a local path or a URI on object storage (s3://bucket/prefix,
gs://bucket/prefix): there each directory above is committed as a generation
with a record listing its files (see scaleout.storage), and a command works on
a local mirror of what it reads (``opened``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

from scaleout import storage
from scaleout.errors import ScaleoutError
from scaleout.fsutil import sha256, utc_now

log = logging.getLogger(__name__)
LOCK = ".scaleout.lock"
# What a writer killed mid-stage leaves: atomic_dir's temporary and set-aside directories, an embeddings import.
# (.embeddings.partial is kept: the embedding job resumes from it.)
LEFTOVERS = (".*.tmp-*", ".*.old-*", ".*.import-*")


class RunDir:
    """The run directory: local, or a local mirror of one on object storage (``remote``, an s3:// or gs:// URI).

    Every path it hands out is local. For a remote run a stage's directory (or
    a metrics file) is fetched from the store the first time it is asked for,
    checked against its commit record; ``push`` commits what the command
    changed back to the store (see scaleout.storage). Workers on other nodes get
    ``remote_uri(stage)`` and read the store themselves.
    """

    def __init__(self, root: str | Path, remote: str | None = None, command: str | None = None):
        self.root = Path(root)
        self.remote = remote
        self.command = command  # what writes it (None: read only); a push records it
        self._fetched: dict[str, dict | None] = {}

    def __repr__(self) -> str:
        return f"RunDir({self.location!r})"

    @property
    def location(self) -> str:
        """What users name the run by: its URI, or its local path."""
        return self.remote or str(self.root)

    def _local(self, rel: str) -> Path:
        path = self.root / rel
        if self.remote is not None and rel not in self._fetched:
            self._fetched[rel] = _fetch(self.remote, rel, path)
        return path

    def remote_uri(self, rel: str) -> str | None:
        """The URI of a stage directory of a remote run, for processes that read the store themselves."""
        return None if self.remote is None else storage.join(self.remote, rel)

    def stored_file(self, rel: str, name: str) -> str:
        """The URI of file ``name`` of the stage ``rel`` as committed in the store (after ``sync``)."""
        self._local(rel)
        record = self._fetched.get(rel)
        if record is None or name not in record["files"]:
            raise ScaleoutError(f"{self.remote_uri(rel)}: no committed {name}")
        return storage.join(self.remote_uri(rel), record["generation"], name)

    def sync(self) -> None:
        """Commits what this command wrote so far (remote runs): before other nodes read a stage, and after each
        stage of the pipeline, so that a later failure keeps the earlier stages."""
        if self.remote is not None and self.command is not None:
            pushed = self.push(self.command)
            if pushed:
                log.info("committed to %s: %s", self.remote, ", ".join(pushed))

    @property
    def data(self) -> Path:
        return self._local("data")

    @property
    def model(self) -> Path:
        return self._local("model")

    @property
    def train_metrics(self) -> Path:
        return self._local("metrics/train.json")

    @property
    def eval_metrics(self) -> Path:
        return self._local("metrics/eval.json")

    def export(self, kind: str) -> Path:
        return self._local(f"export/{kind}")

    @property
    def embeddings(self) -> Path:
        return self._local("embeddings")

    def index(self, kind: str) -> Path:
        return self._local(f"index/{kind}")

    @property
    def index_eval_metrics(self) -> Path:
        return self._local("metrics/index_eval.json")

    @property
    def quality_metrics(self) -> Path:
        return self._local("metrics/quality.json")

    @property
    def artifacts(self) -> Path:
        return self._local("artifacts.json")

    @property
    def checkpoints(self) -> str:
        """Where Ray Train keeps checkpoints by default: RUN/checkpoints, in the store for a remote run."""
        return self.remote_uri("checkpoints") or str((self.root / "checkpoints").resolve())

    def push(self, command: str) -> list[str]:
        """Commits to the store every stage directory and file this command wrote or changed (remote runs only);
        stages first, in pipeline order, artifacts.json last. Returns what was pushed."""
        if self.remote is None:
            return []
        pushed = []
        for rel in STAGES:
            local = self.root / rel
            if local.is_dir() and not storage.same_content(local, self._fetched.get(rel)):
                self._fetched[rel] = storage.commit_dir(local, storage.join(self.remote, rel), command)
                pushed.append(rel)
                if rel == "embeddings":  # the parts the Ray job wrote there are in the set now
                    storage.delete_tree(storage.join(self.remote, ".embeddings.partial"))
        for rel in FILES:
            local = self.root / rel
            if local.is_file() and sha256(local) != (self._fetched.get(rel) or {}).get("sha256"):
                storage.write_bytes(storage.join(self.remote, rel), local.read_bytes())
                self._fetched[rel] = {"sha256": sha256(local)}
                pushed.append(rel)
        return pushed


# A remote run's parts, in the order a push commits them (what a later stage reads goes first).
STAGES = ("data", "model", "embeddings", "index/brute_force", "index/scann", "export/brute_force", "export/scann")
FILES = ("metrics/train.json", "metrics/eval.json", "metrics/index_eval.json", "metrics/quality.json",
         "artifacts.json")


def _fetch(remote: str, rel: str, path: Path) -> dict | None:
    uri = storage.join(remote, rel)
    try:
        if rel in FILES:
            try:
                data = storage.read_bytes(uri)
            except FileNotFoundError:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return {"sha256": sha256(path)}
        record = storage.read_commit(uri)
        if record is not None:
            storage.fetch_dir(uri, path, record)
        return record
    except OSError as exc:
        raise storage.StorageError(storage.describe_error(uri, exc)) from None


@contextlib.contextmanager
def opened(location: str | Path, command: str | None = None) -> Iterator[RunDir]:
    """The run at ``location`` (a path or an s3:// / gs:// URI), for ``command`` to write (``None``: read only).

    A local run is held with ``writing``. A remote one is checked first (the
    store reachable, the bucket there, writes allowed: ``storage.preflight``),
    mirrored into a temporary directory as stages ask for their inputs, held
    with a lock object in the store, and the mirror's new outputs are committed
    back when the command ends, also when it fails after some stages finished.
    """
    if not storage.is_remote(str(location)):
        if command is None:
            yield RunDir(location)
        else:
            with writing(RunDir(location), command) as run:
                yield run
        return
    uri = str(location).rstrip("/")
    if command is not None:
        storage.preflight(uri)
    mirror = Path(tempfile.mkdtemp(prefix="scaleout-run-"))
    run = RunDir(mirror, remote=uri, command=command)
    try:
        if command is None:
            yield run
            return
        with _remote_lock(uri, command):
            try:
                yield run
            except BaseException:
                try:  # keep the stages that finished before the failure
                    run.sync()
                except Exception as exc:  # the failure in flight is the one to report
                    log.warning("could not commit the finished stages to %s: %s", uri, exc)
                raise
            run.sync()
    finally:
        shutil.rmtree(mirror, ignore_errors=True)


LOCK_STALE_SECONDS = 300  # a holder renews its lock every minute; one not renewed for this long is gone


@contextlib.contextmanager
def _remote_lock(uri: str, command: str) -> Iterator[None]:
    """An advisory lock object, RUN/.scaleout.lock, renewed every minute while the command runs.

    Object stores have no file locks: two writers starting in the same second
    could both take it. It stops the common mistake (a second job on a run
    in use) and names the holder; one that died stops counting after
    LOCK_STALE_SECONDS.
    """
    lock = storage.join(uri, LOCK)
    try:
        holder = json.loads(storage.read_bytes(lock))
    except FileNotFoundError:
        holder = None
    except ValueError:
        holder = {}
    if holder is not None and time.time() - float(holder.get("renewed", 0)) < LOCK_STALE_SECONDS:
        raise ScaleoutError(f"{uri} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                            f"({holder.get('command', 'scaleout')}, started {holder.get('started', '?')}); wait "
                            f"for it to finish, or stop it (a lock not renewed for {LOCK_STALE_SECONDS} s is "
                            "taken over)")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": utc_now(),
          "token": uuid.uuid4().hex}
    stop = threading.Event()

    def write() -> None:
        storage.write_bytes(lock, json.dumps({**me, "renewed": time.time()}).encode())

    def renew() -> None:
        while not stop.wait(60):
            with contextlib.suppress(OSError):
                write()

    write()
    thread = threading.Thread(target=renew, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(OSError):
            current = json.loads(storage.read_bytes(lock))
            if current.get("token") == me["token"]:
                fs, path = storage.filesystem(lock)
                fs.delete_file(path)


@contextlib.contextmanager
def writing(run: RunDir, command: str) -> Iterator[RunDir]:
    """Holds ``run`` for one writer: a second command writing it meanwhile is refused, naming this one.

    The lock is an OS file lock (``flock``) on RUN/.scaleout.lock, released by
    the kernel when the process ends however it ends, so a killed writer never
    blocks the next one; the file is removed when the command ends. Whoever
    takes the lock removes what killed writers left behind (temporary
    directories, named in a warning): no one else is writing then.
    """
    created = not run.root.exists()
    run.root.mkdir(parents=True, exist_ok=True)
    path = run.root / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise ScaleoutError(f"{run.root} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                                f"({holder.get('command', 'scaleout')}, started {holder.get('started', '?')}); wait "
                                "for it to finish, or stop it") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder we waited on removed the file as it finished: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "started": utc_now()}).encode())
        _remove_leftovers(run.root)
        yield run
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock
        if created and not any(run.root.iterdir()):
            run.root.rmdir()  # a command that wrote nothing leaves no empty run behind


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _remove_leftovers(root: Path) -> None:
    found = sorted({p for d in (root, *(c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")))
                    for pattern in LEFTOVERS for p in d.glob(pattern)})
    if found:
        log.warning("removing what an interrupted command left in %s: %s", root,
                    ", ".join(str(p.relative_to(root)) for p in found))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
