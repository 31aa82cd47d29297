"""Candidate embeddings: the trained candidate tower over every candidate, in resumable parts.

The candidate table (one Parquet file or a directory of shards, any number)
is cut into *parts* of about ``part_rows`` rows, fixed by the files' row
counts alone. Each part is read, embedded and written as one Parquet file,
``part-NNNNN.parquet``, with the columns

  movie_id     string                         the candidate id
  movie_title  string (null where unknown)    its title
  embedding    fixed_size_list<float32>[dim]  the candidate tower's output

Parts are written to ``.NAME.partial/`` beside the output directory, each
file renamed into place when complete with a sidecar ``part-NNNNN.json``
(rows, bytes, sha256). A run that stops can be started again: parts already
there are kept if the plan (candidate files and model) is the same. When every
part is there the job checks that every candidate id has exactly one
embedding, writes ``embeddings.json`` and renames the directory to its final
name, replacing an earlier one only then.

Embeddings made elsewhere come in through scaleout.embed.imports; the files of a
set being made are written by scaleout.embed.output.

Backends: ``local`` embeds the parts in this process; ``ray`` reads them with
Ray Data (one read task per part) and embeds them in a fixed pool of actors,
each loading the saved candidate tower once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaleout import storage
from scaleout.embed.embedding_set import FORMAT, ID, TITLE, EmbeddingSet
from scaleout.embed.output import EMBED_BATCH, PLAN_JSON, check_ids, complete_set, throughput, write_part
from scaleout.embed.parts import (PART_COLUMN, Part, candidate_files, file_label, file_sha256, plan_parts,
                                  read_part)
from scaleout.config import EmbedConfig
from scaleout.errors import ArtifactError, DataError, ScaleoutError, first_line
from scaleout.fsutil import sha256, tree_fingerprint, write_json
from scaleout.names import part_name
from scaleout.scratch import scratch
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- embedding


def embed(tower, ids: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """Runs ``tower`` over string ``ids`` ([n]); returns float32 ``[n, dim]``."""
    from scaleout.tfenv import tf

    out = None
    for i in range(0, len(ids), batch_size):
        batch = tower(tf.constant(np.asarray(ids[i:i + batch_size], dtype=object))).numpy()
        if out is None:
            out = np.empty((len(ids), batch.shape[1]), np.float32)
        out[i:i + len(batch)] = batch
    return out if out is not None else np.empty((0, 0), np.float32)


def load_candidate_tower(model_dir: str | Path):
    """The candidate tower of ``model_dir``, its files checked against model.json by the job's driver first
    (``load_candidate_tower_check``), not again in each actor."""
    from scaleout.tfenv import tf

    path = Path(model_dir) / "candidate_tower"
    if not path.is_dir():
        raise ArtifactError(f"{model_dir}: no trained candidate tower (no candidate_tower/); run `scaleout train`")
    try:
        # The SavedModel's own call function, without rebuilding Keras layers: at 10M ids this loads in
        # 11 s instead of 40 s (one thread), the vocabulary going straight into the lookup table.
        return tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as exc:  # OpError: TensorFlow's checksums (DataLossError)
        raise ArtifactError(f"{path}: cannot load the saved tower ({first_line(exc)}); its files "
                            "are damaged or incomplete: train again (`scaleout train`), or restore them") from exc


class PartEmbedder:
    """Embeds whole parts and writes each to ``out_dir``; one per process or Ray actor.

    The tower is loaded once, here. ``threads`` bounds TensorFlow's thread
    pools so that N actors on N cores do not compete for them.
    """

    def __init__(self, model_dir: str, out_dir: str, threads: int = 1):
        from scaleout.tfenv import tf  # Keras 2 before TensorFlow, also in Ray actors

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # this process already ran TensorFlow ops: keep its pools
            pass
        if storage.is_remote(model_dir):  # a committed model in the store: this node fetches its own copy
            # Removed once loaded: the tower's variables and vocabulary are in memory by then, and an actor ends
            # without running its clean-up.
            with scratch("tower") as tmp:
                storage.fetch_dir(model_dir, tmp / "model", only=lambda name: name.startswith("candidate_tower/"))
                self.tower = load_candidate_tower(tmp / "model")
        else:
            self.tower = load_candidate_tower(model_dir)
        self.out_dir = out_dir if storage.is_remote(out_dir) else Path(out_dir)
        self.worker = f"{os.uname().nodename}:{os.getpid()}"

    def __call__(self, table: pa.Table) -> dict[str, np.ndarray]:
        numbers = np.unique(table.column(PART_COLUMN).to_numpy())
        rows = [self.embed_part(int(n), table.filter(pc.equal(table.column(PART_COLUMN), int(n))))
                for n in numbers]
        return {key: np.array([r[key] for r in rows]) for key in rows[0]}

    def embed_part(self, number: int, table: pa.Table) -> dict:
        started = time.time()
        ids = table.column(ID).combine_chunks()
        tower_started = time.time()
        vectors = embed(self.tower, ids.to_numpy(zero_copy_only=False))
        tower_seconds = time.time() - tower_started
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            raise DataError(f"the candidate tower gave NaN or infinite values for {int(bad.sum())} candidates, "
                            f"the first {ids[int(bad.argmax())].as_py()!r}; the model is broken, not the data")
        return write_part(self.out_dir, number, ids, table.column(TITLE).combine_chunks(), vectors, started,
                          self.worker, tower_seconds)


# --------------------------------------------------------------------------- the job


@dataclasses.dataclass(frozen=True)
class Stored:
    """Where the Ray backend's processes find a remote run's inputs and put their parts: in the store, since
    they may run on nodes that cannot see the driver's disk.

    model: the committed model directory's URI; work: the URI the parts go to
    (RUN/.embeddings.partial); candidates: local candidate file -> its URI.
    """
    model: str
    work: str
    candidates: dict[str, str]


def embed_candidates(model_dir: str | Path, candidates: str | Path, out_dir: str | Path,
                     cfg: EmbedConfig = EmbedConfig(), stored: Stored | None = None) -> "EmbeddingSet | None":
    """Embeds every candidate of ``candidates`` with the tower of ``model_dir`` into ``out_dir``.

    Backend "ray" needs a connected Ray cluster and runs ``cfg.workers`` actors
    of ``cfg.cpus_per_worker`` CPUs; with ``stored`` they read the model and
    the candidates from the store and write their parts there. Returns the
    finished set, or None when ``cfg.max_parts`` stopped it before the last part
    (run it again to continue where it stopped).
    """
    backend, cpus_per_worker = cfg.backend, cfg.cpus_per_worker
    workers = cfg.workers if backend == "ray" else 1
    stored = stored if backend == "ray" else None
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    started = time.time()
    files = candidate_files(candidates)
    parts = plan_parts(files, cfg.part_rows)
    if workers > 1 and len(parts) < workers:  # cut finer, so that every worker has a part to embed
        total = sum(p.rows for p in parts)
        parts = plan_parts(files, max(1, -(-total // workers)))
    if stored is not None:
        parts = [dataclasses.replace(p, file=stored.candidates.get(p.file, p.file)) for p in parts]
    load_candidate_tower_check(model_dir)
    if backend == "ray":  # every actor up before parts are handed out (_run_ray): the CPUs must be there
        import ray

        from scaleout.nodes import check_cpus

        check_cpus(workers, cpus_per_worker, ray.cluster_resources().get("CPU", 0), "embedding workers")
    if backend == "ray" and stored is None:  # a local run: the actors, wherever Ray places them, read and write here
        from scaleout.nodes import check_nodes_share

        check_nodes_share([model_dir / "candidate_tower" / "saved_model.pb", out_dir.parent,
                           *(Path(f) for f in files if not storage.is_remote(str(f)))],
                          "the model, candidates (or embeddings' folder)")
    plan = {
        "format": FORMAT,
        "model": {"path": stored.model if stored else str(model_dir),
                  "candidate_tower": tree_fingerprint(model_dir / "candidate_tower")},
        # Named as the workers read them: the store's URIs, not this command's temporary mirror, so that a
        # later command finds the same plan and resumes.
        "candidates": [{"file": stored.candidates.get(file_label(f), file_label(f)) if stored else file_label(f),
                        "sha256": file_sha256(f)} for f in files],
        "parts": [dataclasses.asdict(p) for p in parts],
    }
    work = out_dir.parent / f".{out_dir.name}.partial"
    done = _resume_stored(stored.work, plan, parts) if stored else _resume(work, plan, parts)
    pending = [p for p in parts if p.number not in done]
    total = sum(p.rows for p in parts)
    if done:
        log.info("resuming: %d of %d parts (%s candidates) already embedded in %s", len(done), len(parts),
                 f"{sum(parts[n].rows for n in done):,}", work)
    log.info("embedding %s candidates in %d parts with %s (%d worker%s)", f"{total:,}", len(parts), backend,
             workers, "s" if workers > 1 else "")
    progress = _Progress(total, len(parts), sum(parts[n].rows for n in done), len(done))
    stop_early = cfg.max_parts is not None and len(pending) > cfg.max_parts
    if stop_early:
        pending = pending[:cfg.max_parts]
    if pending:
        if backend == "ray":
            _run_ray(pending, stored.model if stored else str(model_dir), stored.work if stored else str(work),
                     workers, cpus_per_worker, progress)
        else:
            _run_local(pending, model_dir, work, workers, cpus_per_worker, progress)
    if stop_early:
        log.info("stopped after %d more parts as asked (--max-parts): %d of %d parts done in %s; run again to "
                 "continue", len(pending), progress.count, len(parts), stored.work if stored else work)
        return None
    if stored is not None:
        _download_parts(stored.work, work, len(parts))
    return _finish(work, out_dir, plan, parts, backend, workers, started, progress.summaries)


def load_candidate_tower_check(model_dir: Path) -> None:
    """ArtifactError, before the job plans anything, for a missing candidate tower or one whose files differ from
    their checksums in model.json."""
    from scaleout.train.saved import MODEL_JSON, check_tower_files

    if not (model_dir / "candidate_tower" / "saved_model.pb").is_file():
        raise ArtifactError(f"{model_dir}: no trained candidate tower (candidate_tower/saved_model.pb); "
                            "run `scaleout train` first")
    if (model_dir / MODEL_JSON).is_file():
        check_tower_files(model_dir, "candidate_tower")


class _Progress:
    def __init__(self, total: int, parts: int, done_rows: int, done_parts: int):
        self.total, self.parts, self.rows, self.count = total, parts, done_rows, done_parts
        self.started = time.monotonic()
        self.summaries: list[dict] = []

    def add(self, summary: dict) -> None:
        self.summaries.append(summary)
        self.rows += summary["rows"]
        self.count += 1
        elapsed = time.monotonic() - self.started
        log.info("embedded part %d/%d: %s of %s candidates (%.0f%%), %s candidates/s so far", self.count,
                 self.parts, f"{self.rows:,}", f"{self.total:,}", 100 * self.rows / self.total,
                 f"{sum(s['rows'] for s in self.summaries) / max(elapsed, 1e-9):,.0f}")


def _resume(work: Path, plan: dict, parts: list[Part]) -> set[int]:
    """Part numbers already complete in ``work``; starts ``work`` afresh if its plan differs."""
    plan_path = work / PLAN_JSON
    if work.exists():
        try:
            same = json.loads(plan_path.read_text()) == json.loads(json.dumps(plan))
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            log.warning("%s holds parts of another plan (other candidates or model): starting again", work)
            shutil.rmtree(work)
    if not work.exists():
        work.mkdir(parents=True)
        write_json(plan_path, plan)
        return set()
    done = set()
    for p in parts:
        path, meta = work / p.name, work / part_name(p.number, "json")
        try:
            summary = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        # The checksum, not only the size: a part damaged in place is embedded again.
        if summary.get("rows") == p.rows and path.is_file() and path.stat().st_size == summary.get("bytes") \
                and sha256(path) == summary.get("sha256"):
            done.add(p.number)
    return done


def _resume_stored(work: str, plan: dict, parts: list[Part]) -> set[int]:
    """Part numbers already complete under the store's ``work`` prefix (their sidecar there, the part of its size);
    starts ``work`` afresh if its plan differs. Each part's checksum is checked when the driver fetches it."""
    try:
        same = json.loads(storage.read_bytes(storage.join(work, PLAN_JSON))) == json.loads(json.dumps(plan))
    except (FileNotFoundError, json.JSONDecodeError):
        same = False
    present = storage.list_files(work)
    if present and not same:
        log.warning("%s holds parts of another plan (other candidates or model): starting again", work)
        storage.delete_tree(work)
        present = {}
    if not same:
        storage.write_bytes(storage.join(work, PLAN_JSON), json.dumps(plan, indent=2, sort_keys=True).encode())
        return set()
    done = set()
    for p in parts:
        sidecar = part_name(p.number, "json")
        if sidecar not in present or p.name not in present:
            continue
        try:
            summary = json.loads(storage.read_bytes(storage.join(work, sidecar)))
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("rows") == p.rows and present[p.name] == summary.get("bytes"):
            done.add(p.number)
    return done


def _download_parts(work_uri: str, work: Path, n_parts: int) -> None:
    """The parts under the store's ``work_uri`` into the local ``work``, each checked against its sidecar."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.monotonic()
    for n in range(n_parts):
        sidecar = json.loads(storage.read_bytes(storage.join(work_uri, part_name(n, "json"))))
        storage.download_file(storage.join(work_uri, part_name(n)), work / part_name(n), sidecar["sha256"])
        write_json(work / part_name(n, "json"), sidecar)
    log.info("fetched %d embedding parts from %s in %.1f s", n_parts, work_uri, time.monotonic() - started)


def _run_local(pending, model_dir, work, workers, cpus_per_worker, progress) -> None:
    embedder = PartEmbedder(str(model_dir), str(work), threads=cpus_per_worker)
    for part in pending:
        progress.add(embedder.embed_part(part.number, read_part(part)))


def _run_ray(pending, model_dir, work, workers, cpus_per_worker, progress) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # our own progress lines instead
    # Every actor of the pool up (its tower loaded) before parts are handed out, so that the work is spread
    # over all of them, and a cluster that cannot place them fails with a timeout instead of running on fewer.
    context.wait_for_min_actors_s = 600
    ds = ray.data.read_datasource(CandidateParts(pending), override_num_blocks=len(pending), num_cpus=0,
                                 concurrency=max(1, workers))  # 0-CPU reads: bounded, or Ray starts one process each
    ds = ds.map_batches(PartEmbedder, fn_constructor_kwargs={"model_dir": str(model_dir), "out_dir": str(work),
                                                            "threads": cpus_per_worker},
                        batch_size=None, batch_format="pyarrow",
                        # one part at a time per actor: parts are large, and the idle actor takes the next
                        compute=ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                        num_cpus=cpus_per_worker, scheduling_strategy="SPREAD")  # actors over the nodes
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for row in batch.to_dict("records"):
                progress.add({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    except Exception as exc:  # Ray wraps the actor's exception; surface ours by name
        cause = exc
        while cause is not None and not isinstance(cause, ScaleoutError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is not None:
            raise type(cause)(str(cause)) from exc
        raise


def _candidate_parts_source():
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _CandidateParts(Datasource):
        """Ray Data source with one read task (one block) per part."""

        def __init__(self, parts: list[Part]):
            super().__init__()
            self.parts = parts

        def estimate_inmemory_data_size(self):
            return sum(p.rows for p in self.parts) * 32

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(lambda p=p: [read_part(p)],
                             BlockMetadata(num_rows=p.rows, size_bytes=p.rows * 32, input_files=[p.file],
                                           exec_stats=None))
                    for p in self.parts]

    return _CandidateParts


def CandidateParts(parts: list[Part]):  # noqa: N802  (a class made on first use: Ray imported lazily)
    return _candidate_parts_source()(parts)


def _finish(work: Path, out_dir: Path, plan: dict, parts: list[Part], backend: str, workers: int,
            started: float, summaries: list[dict]) -> "EmbeddingSet":
    check_ids(work, len(parts), sum(p.rows for p in parts), "the candidate table " +
               ", ".join(sorted({p.file for p in parts})))
    return complete_set(work, out_dir, len(parts), plan["model"], plan["candidates"], started,
                     {"backend": backend, "workers": workers, **throughput(summaries)})


