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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator

from scaleout.errors import ScaleoutError
from scaleout.fsutil import utc_now

log = logging.getLogger(__name__)
LOCK = ".scaleout.lock"
# What a writer killed mid-stage leaves: atomic_dir's temporary and set-aside directories, an embeddings import.
# (.embeddings.partial is kept: the embedding job resumes from it.)
LEFTOVERS = (".*.tmp-*", ".*.old-*", ".*.import-*")


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics" / "train.json"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "metrics" / "eval.json"

    def export(self, kind: str) -> Path:
        return self.root / "export" / kind

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    def index(self, kind: str) -> Path:
        return self.root / "index" / kind

    @property
    def index_eval_metrics(self) -> Path:
        return self.root / "metrics" / "index_eval.json"

    @property
    def quality_metrics(self) -> Path:
        return self.root / "metrics" / "quality.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts.json"


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
