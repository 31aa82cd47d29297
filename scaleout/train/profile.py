"""A TensorFlow profiler trace of one training epoch (``--profile-epoch N``), per worker, and where its time went.

Every process that trains (the one process, or each Ray worker) traces epoch N
with ``tf.profiler.experimental`` and sums its trace (``summarise``): the
kernels' own time by op type (MatMul, Exp, the collectives, which include the
wait for the other workers, ...) and by op, the input pipeline's (tf.data's
threads), and the epoch's wall time. The traces and the summaries land in
RUN/metrics/profile (``write_profile``): ``profile.json``, and each worker's
trace under ``worker-R/`` for TensorBoard's profile plugin (``tensorboard
--logdir RUN/metrics/profile/worker-0``). The profiled epoch runs slower than
the others (the tracing), and its history entry says ``"profiled": true``.
A profiled epoch that is the first its process trains (epoch 1, or the first
after a resume from a checkpoint, as after a worker's failure) also holds the
tracing of the step: its summary says ``"first_epoch_of_process": true`` and
the log warns.
"""

from __future__ import annotations

import collections
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

from scaleout import storage
from scaleout.errors import ArtifactError
from scaleout.fsutil import atomic_dir, read_manifest, write_json
from scaleout.tfenv import profiler_trace, tf

log = logging.getLogger(__name__)

FORMAT = "scaleout-profile/1"
SUMMARY = "summary.json"  # one worker's, beside its trace
MARKER = "profile.json"  # RUN/metrics/profile's, every worker's summary
TOP = 25  # op types and ops kept in a summary, by their own time


class EpochProfile(tf.keras.callbacks.Callback):
    """Traces epoch ``epoch`` (counted from 1) into ``directory`` and writes its summary there (``SUMMARY``);
    then calls ``then(directory)`` (a Ray worker uploads it). Put it before the callbacks whose epoch-end work
    is not the epoch's (checkpoints): Keras calls them in order."""

    def __init__(self, epoch: int, directory: Path, worker: int = 0, then: Callable[[Path], None] | None = None):
        super().__init__()
        self.epoch, self.directory, self.worker, self.then = epoch, Path(directory), worker, then
        self._start: float | None = None
        self._trained = 0  # epochs this process trained before the one running (a resumed worker starts at 0)
        self._first = False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._first = self._trained == 0
            if self._first:
                log.warning("worker %d: the profiled epoch %d is the first this process trains (a fresh start, or a "
                            "resume from a checkpoint): its trace holds the tracing of the step and the first "
                            "calls' warm-up; profile a later epoch for the steady step", self.worker, self.epoch)
            tf.profiler.experimental.start(str(self.directory))
            self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self._trained += 1
        if self._start is None:
            return
        wall = time.monotonic() - self._start
        self.close()
        summary = {"format": FORMAT, "worker": self.worker, "epoch": self.epoch, "wall_seconds": round(wall, 3),
                   "first_epoch_of_process": self._first, **summarise(self.directory)}
        write_json(self.directory / SUMMARY, summary)
        if self.then is not None:
            self.then(self.directory)

    def close(self) -> None:
        """Stops the trace if one is running (training that ends inside the profiled epoch)."""
        if self._start is not None:
            self._start = None
            tf.profiler.experimental.stop()


def _trace(directory: Path) -> Path:
    found = sorted(Path(directory).rglob("*.xplane.pb"))
    if not found:
        raise ArtifactError(f"{directory}: the profiler wrote no trace (*.xplane.pb)")
    return found[-1]


def _is_op(name: str) -> bool:
    """A kernel's event is named ``op_name:OpType``; the executor's own are ``Class::method``."""
    return ":" in name and "::" not in name and " " not in name


def _own_times(events: list[tuple[int, int, str]]) -> list[tuple[str, int]]:
    """(name, own picoseconds) of each of one thread's op events ``(start, duration, name)``: its time less that
    of the op events inside it (a function call's kernels)."""
    events = sorted(events, key=lambda e: (e[0], -e[1]))
    own, stack = [], []  # stack: [end, index into own]
    for start, duration, name in events:
        while stack and stack[-1][0] <= start:
            stack.pop()
        if stack:
            parent = stack[-1][1]
            own[parent] = (own[parent][0], own[parent][1] - duration)
        own.append((name, duration))
        stack.append([start + duration, len(own) - 1])
    return own


def summarise(directory: Path) -> dict:
    """Where the traced time went, from the trace under ``directory``: the op kernels' own seconds, summed over
    the executor's threads, by op type and by op (the ``TOP`` largest of each), and tf.data's threads apart
    (``input_seconds``); ``op_seconds`` exceeds the wall time where ops ran on several threads at once."""
    space = profiler_trace(_trace(directory).read_bytes())
    by_type, by_op, counts = collections.Counter(), collections.Counter(), collections.Counter()
    input_ps, threads = 0, 0
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            events = [(e.offset_ps, e.duration_ps, plane.event_metadata[e.metadata_id].name) for e in line.events]
            events = [e for e in events if _is_op(e[2])]
            if not events:
                continue
            if line.name.startswith("tf_data"):
                input_ps += sum(d for _, d, _ in events)
                continue
            threads += 1
            for name, ps in _own_times(events):
                op_type = name.rsplit(":", 1)[1]
                by_type[op_type] += ps
                by_op[name] += ps
                counts[op_type] += 1
    total = sum(by_type.values())
    seconds = lambda ps: round(ps / 1e12, 4)  # noqa: E731
    return {"op_seconds": seconds(total), "input_seconds": seconds(input_ps), "op_threads": threads,
            "by_type": [{"type": t, "seconds": seconds(ps), "share": round(ps / total, 4) if total else 0.0,
                         "count": counts[t]} for t, ps in by_type.most_common(TOP)],
            "by_op": [{"op": o, "seconds": seconds(ps)} for o, ps in by_op.most_common(TOP)]}


def mark_profiled(history: list[dict], epoch: int) -> None:
    """The history entry of the profiled epoch says so: its speed includes the tracing."""
    for entry in history:
        if entry.get("epoch") == epoch:
            entry["profiled"] = True


def upload(directory: Path, uri: str) -> None:
    """A Ray worker's traced directory to ``uri`` (a path or a store URI, replacing what an earlier attempt of the
    same epoch left there), then removed here (uploaded or not): the driver may be on another node. The summary
    goes last: ``fetch`` takes a worker's directory as whole once it is there."""
    try:
        storage.delete_tree(uri)
        files = [p for p in sorted(Path(directory).rglob("*")) if p.is_file() and p.name != SUMMARY]
        for path in [*files, Path(directory) / SUMMARY]:
            storage.upload_file(path, storage.join(uri, path.relative_to(directory).as_posix()))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def fetch(uri: str, workers: int, scratch: Path) -> list[Path]:
    """Each worker's uploaded directory (``uri``/worker-R), fetched into ``scratch``; [] with a warning where a
    worker's is missing (its profiled epoch was trained before a resume that lost it, or it never ended)."""
    fetched = []
    for rank in range(workers):
        files = storage.list_files(storage.join(uri, f"worker-{rank}"))
        if SUMMARY not in files:
            log.warning("no profile from worker %d under %s; RUN/metrics/profile is left as it was", rank, uri)
            return []
        for rel in files:
            storage.download_file(storage.join(uri, f"worker-{rank}", rel), scratch / f"worker-{rank}" / rel)
        fetched.append(scratch / f"worker-{rank}")
    return fetched


def write_profile(final: Path, workers: list[Path], made_from: dict) -> dict:
    """RUN/metrics/profile from each worker's traced directory (``workers[rank]``, each with its ``SUMMARY``),
    replaced whole; ``made_from``: what profile.json records it was made from (the settings, the data)."""
    summaries = [read_manifest(Path(w) / SUMMARY, FORMAT, f"{w}: no {SUMMARY} (the profiled epoch did not end)")
                 for w in workers]
    profile = {"format": FORMAT, "epoch": summaries[0]["epoch"] if summaries else None, "workers": summaries,
               **made_from}
    with atomic_dir(final, MARKER) as tmp:
        for rank, source in enumerate(workers):
            shutil.copytree(source, tmp / f"worker-{rank}")
        write_json(tmp / MARKER, profile)
    for summary in summaries:
        shown = ", ".join(f"{t['type']} {t['seconds']:.2f}" for t in summary["by_type"][:6])
        first = " (the first epoch of its process: tracing included)" if summary.get("first_epoch_of_process") else ""
        log.info("profile of epoch %d, worker %d%s: %.2f s of kernels in %.2f s (input %.2f s); by type, s: %s",
                 summary["epoch"], summary["worker"], first, summary["op_seconds"], summary["wall_seconds"],
                 summary["input_seconds"], shown)
    log.info("profile written to %s (tensorboard --logdir %s/worker-0)", final, final)
    return profile
