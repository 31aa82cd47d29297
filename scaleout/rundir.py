"""Where the stages of one run keep their outputs (the `--run DIR` layout).

  RUN/data/                  prepared dataset (scaleout.data.prepare)
  RUN/model/                 trained towers: query_tower/, candidate_tower/ (Keras
                             SavedModels) and model.json (settings, vocab sizes)
  RUN/metrics/train.json     per-epoch loss, seconds, examples/s and learning rate of the last fit
  RUN/metrics/eval.json      test metrics, named as TFRS names them
  RUN/metrics/tensorboard/   TensorBoard scalars of the last fit: the same figures per epoch
  RUN/metrics/profile/       a profiler trace of one epoch per worker and where its time went
                             (``--profile-epoch``; scaleout.train.profile)
  RUN/embeddings/            candidate embeddings, Parquet parts + embeddings.json
                             (scaleout.embed)
  RUN/index/scann/           ScaNN index (scaleout.index.scann); RUN/index/brute_force/ too
  RUN/metrics/index_eval.json  FactorizedTopK through each index, side by side
  RUN/metrics/quality.json   hit rate and NDCG with and without seen items, and the model over each baseline
  RUN/export/scann/          retrieval SavedModels (TFRS ScaNN / BruteForce layers):
  RUN/export/brute_force/    raw user id in; scores, movie ids, titles out
  RUN/artifacts.json         fingerprints and links of all of the above
  RUN/checkpoints/           training checkpoints: Ray Train's (backend ray), and the local backend's until its model is saved

RUN may be a local path or a URI on object storage (s3://bucket/prefix,
gs://bucket/prefix): there each directory above is committed as a generation
with a record listing its files (see scaleout.storage), and a command works on
a local mirror of what it reads (``opened``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator

from scaleout import storage
from scaleout.errors import ScaleoutError
from scaleout.fsutil import sha256
from scaleout.runlock import hold_local, hold_remote
from scaleout.scratch import scratch

log = logging.getLogger(__name__)


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

    def shown(self, rel: str) -> str:
        """How messages and records name a part of the run: its URI for a remote run (never the local mirror)."""
        return self.remote_uri(rel) or str(self.root / rel)

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
    def tensorboard(self) -> Path:
        return self._local("metrics/tensorboard")

    @property
    def profile(self) -> Path:
        return self._local("metrics/profile")

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

    def metrics_file(self, rel: str) -> Path:
        """One of the run's metrics files by its path in the run (``metrics/eval.json``: one of FILES)."""
        if rel not in FILES or not rel.startswith("metrics/"):
            raise ValueError(f"{rel!r} is not one of the run's metrics files ({', '.join(FILES[:-1])})")
        return self._local(rel)

    @property
    def artifacts(self) -> Path:
        return self._local("artifacts.json")

    @property
    def checkpoints(self) -> str:
        """Where training keeps checkpoints by default: RUN/checkpoints, in the store for a remote run."""
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
                in_store = stored_parts(self.remote) if rel == "embeddings" else None
                self._fetched[rel] = storage.commit_dir(local, storage.join(self.remote, rel), command,
                                                        in_store=in_store)
                pushed.append(rel)
                if rel == "embeddings":  # the parts the Ray job wrote there are in the set now
                    storage.delete_tree(storage.join(self.remote, PARTIAL))
        for rel in FILES:
            local = self.root / rel
            if local.is_file() and sha256(local) != (self._fetched.get(rel) or {}).get("sha256"):
                storage.write_bytes(storage.join(self.remote, rel), local.read_bytes())
                self._fetched[rel] = {"sha256": sha256(local)}
                pushed.append(rel)
        return pushed


# A remote run's parts, in the order a push commits them (what a later stage reads goes first).
STAGES = ("data", "model", "embeddings", "index/brute_force", "index/scann", "export/brute_force", "export/scann",
          "metrics/tensorboard", "metrics/profile")
FILES = ("metrics/train.json", "metrics/eval.json", "metrics/index_eval.json", "metrics/quality.json",
         "artifacts.json")


PARTIAL = ".embeddings.partial"  # where the Ray embedding job's actors put their parts (scaleout.embed.job)


def stored_parts(remote: str) -> dict[str, tuple[str, str]]:
    """{part file: (URI, sha256)} of the parts the Ray embedding job left in the store, from their sidecars."""
    work = storage.join(remote, PARTIAL)
    found = {}
    for name in storage.list_files(work):
        if name.startswith("part-") and name.endswith(".json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                sidecar = json.loads(storage.read_bytes(storage.join(work, name)))
                part = name[:-len(".json")] + ".parquet"
                found[part] = (storage.join(work, part), sidecar["sha256"])
    return found


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
    with scratch("run") as mirror:
        run = RunDir(mirror, remote=uri, command=command)
        try:
            if command is None:
                yield run
                return
            with hold_remote(uri, command):
                try:
                    yield run
                except BaseException:
                    try:  # keep the stages that finished before the failure
                        run.sync()
                    except Exception as exc:  # the failure in flight is the one to report
                        log.warning("could not commit the finished stages to %s: %s", uri, exc)
                    raise
                run.sync()
        except ScaleoutError as exc:
            if str(mirror) in str(exc):  # name the store, not the temporary mirror
                raise type(exc)(str(exc).replace(str(mirror), uri)) from exc
            raise


@contextlib.contextmanager
def writing(run: RunDir, command: str) -> Iterator[RunDir]:
    """Holds the local run ``run`` for ``command`` (see scaleout.runlock.hold_local)."""
    with hold_local(run.root, command):
        yield run
