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

Embeddings made elsewhere come in through scaleout.embeddings_import.

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
import pyarrow.parquet as pq

from scaleout import __version__
from scaleout.errors import ArtifactError, DataError, ScaleoutError
from scaleout.fsutil import json_fingerprint, replace_dir, sha256, tree_fingerprint, write_json
# The parts and the reader live in their own modules; their names are part of this module's interface.
from scaleout.candidate_parts import PART_COLUMN, Part, candidate_files, plan_parts, read_part  # noqa: F401
from scaleout.embedding_set import EMBEDDINGS_JSON, FORMAT, ID, TITLE, VECTOR, EmbeddingSet  # noqa: F401

log = logging.getLogger(__name__)

PLAN_JSON = "plan.json"
DEFAULT_PART_ROWS = 500_000
EMBED_BATCH = 65_536


# --------------------------------------------------------------------------- embedding


def embed(tower, ids: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """Runs ``tower`` over string ``ids`` ([n]); returns float32 ``[n, dim]``."""
    from scaleout.model import tf

    out = None
    for i in range(0, len(ids), batch_size):
        batch = tower(tf.constant(np.asarray(ids[i:i + batch_size], dtype=object))).numpy()
        if out is None:
            out = np.empty((len(ids), batch.shape[1]), np.float32)
        out[i:i + len(batch)] = batch
    return out if out is not None else np.empty((0, 0), np.float32)


def load_candidate_tower(model_dir: str | Path):
    from scaleout.model import tf

    path = Path(model_dir) / "candidate_tower"
    if not path.is_dir():
        raise ArtifactError(f"{model_dir}: no trained candidate tower (no candidate_tower/); run `scaleout train`")
    try:
        # The SavedModel's own call function, without rebuilding Keras layers: at 10M ids this loads in
        # 11 s instead of 40 s (one thread), the vocabulary going straight into the lookup table.
        return tf.saved_model.load(str(path))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot load the saved tower ({exc})") from exc


class PartEmbedder:
    """Embeds whole parts and writes each to ``out_dir``; one per process or Ray actor.

    The tower is loaded once, here. ``threads`` bounds TensorFlow's thread
    pools so that N actors on N cores do not compete for them.
    """

    def __init__(self, model_dir: str, out_dir: str, threads: int = 1):
        import scaleout  # noqa: F401  (Keras 2 before TensorFlow, also in Ray actors)
        from scaleout.model import tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # this process already ran TensorFlow ops: keep its pools
            pass
        self.tower = load_candidate_tower(model_dir)
        self.out_dir = Path(out_dir)
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


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.field("item", pa.float32(), nullable=False), dim)


def write_part(out_dir: Path, number: int, ids: pa.Array, titles: pa.Array, vectors: np.ndarray, started: float,
               worker: str, tower_seconds: float = 0.0) -> dict:
    """Writes one part file (temporary name, then renamed) and its sidecar; returns the sidecar's content."""
    dim = vectors.shape[1]
    out = pa.table({ID: ids, TITLE: titles,
                    VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), type=vector_type(dim))})
    name = f"part-{number:05d}.parquet"
    tmp = out_dir / f".{name}.tmp-{os.getpid()}"
    # Non-null floats without statistics or compression: the list column dominates the writing time.
    pq.write_table(out, tmp, row_group_size=EMBED_BATCH, use_dictionary=[TITLE], write_statistics=[ID],
                   compression={ID: "zstd", TITLE: "zstd", VECTOR: "none"})
    size = tmp.stat().st_size
    digest = sha256(tmp)
    os.replace(tmp, out_dir / name)
    summary = {"part": number, "rows": out.num_rows, "dim": dim, "bytes": size, "sha256": digest,
               "start": started, "end": time.time(), "tower_seconds": tower_seconds, "worker": worker}
    write_json(out_dir / f"part-{number:05d}.json", summary)
    return summary


# --------------------------------------------------------------------------- the job


def embed_candidates(model_dir: str | Path, candidates: str | Path, out_dir: str | Path, *,
                     backend: str = "local", workers: int = 1, cpus_per_worker: int = 1,
                     part_rows: int = DEFAULT_PART_ROWS, max_parts: int | None = None) -> "EmbeddingSet | None":
    """Embeds every candidate of ``candidates`` with the tower of ``model_dir`` into ``out_dir``.

    backend "ray" needs a connected Ray cluster (``ray.init``) and runs
    ``workers`` actors of ``cpus_per_worker`` CPUs. Returns the finished set,
    or None when ``max_parts`` stopped it before the last part (run it again
    to continue where it stopped).
    """
    if backend not in ("local", "ray"):
        raise ScaleoutError(f"unknown backend {backend!r}; expected local or ray")
    if workers < 1 or cpus_per_worker < 1:
        raise ScaleoutError(f"workers and cpus_per_worker must be at least 1 (got {workers}, {cpus_per_worker})")
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    started = time.time()
    files = candidate_files(candidates)
    parts = plan_parts(files, part_rows)
    load_candidate_tower_check(model_dir)
    plan = {
        "format": FORMAT,
        "model": {"path": str(model_dir), "candidate_tower": tree_fingerprint(model_dir / "candidate_tower")},
        "candidates": [{"file": str(f.resolve()), "sha256": sha256(f)} for f in files],
        "parts": [dataclasses.asdict(p) for p in parts],
    }
    work = out_dir.parent / f".{out_dir.name}.partial"
    done = _resume(work, plan, parts)
    pending = [p for p in parts if p.number not in done]
    total = sum(p.rows for p in parts)
    if done:
        log.info("resuming: %d of %d parts (%s candidates) already embedded in %s", len(done), len(parts),
                 f"{sum(parts[n].rows for n in done):,}", work)
    if backend == "local":
        workers = 1
    log.info("embedding %s candidates in %d parts with %s (%d worker%s)", f"{total:,}", len(parts), backend,
             workers, "s" if workers > 1 else "")
    progress = _Progress(total, len(parts), sum(parts[n].rows for n in done), len(done))
    stop_early = max_parts is not None and len(pending) > max_parts
    if stop_early:
        pending = pending[:max_parts]
    if pending:
        run = _run_ray if backend == "ray" else _run_local
        run(pending, model_dir, work, workers, cpus_per_worker, progress)
    if stop_early:
        log.info("stopped after %d more parts as asked (--max-parts): %d of %d parts done in %s; run again to "
                 "continue", len(pending), progress.count, len(parts), work)
        return None
    return _finish(work, out_dir, plan, parts, backend, workers, started, progress.summaries)


def load_candidate_tower_check(model_dir: Path) -> None:
    if not (model_dir / "candidate_tower" / "saved_model.pb").is_file():
        raise ArtifactError(f"{model_dir}: no trained candidate tower (candidate_tower/saved_model.pb); "
                            "run `scaleout train` first")


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
        path, meta = work / p.name, work / f"part-{p.number:05d}.json"
        try:
            summary = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("rows") == p.rows and path.is_file() and path.stat().st_size == summary.get("bytes"):
            done.add(p.number)
    return done


def _run_local(pending, model_dir, work, workers, cpus_per_worker, progress) -> None:
    embedder = PartEmbedder(str(model_dir), str(work), threads=cpus_per_worker)
    for part in pending:
        progress.add(embedder.embed_part(part.number, read_part(part)))


def _run_ray(pending, model_dir, work, workers, cpus_per_worker, progress) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False  # our own progress lines instead
    ds = ray.data.read_datasource(CandidateParts(pending), override_num_blocks=len(pending), num_cpus=0,
                                 concurrency=max(1, workers))  # 0-CPU reads: bounded, or Ray starts one process each
    ds = ds.map_batches(PartEmbedder, fn_constructor_kwargs={"model_dir": str(model_dir), "out_dir": str(work),
                                                            "threads": cpus_per_worker},
                        batch_size=None, batch_format="pyarrow", compute=ActorPoolStrategy(size=workers),
                        num_cpus=cpus_per_worker)
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
    _check_ids(work, len(parts), sum(p.rows for p in parts), "the candidate table " +
               ", ".join(sorted({p.file for p in parts})))
    return _complete(work, out_dir, len(parts), plan["model"], plan["candidates"], started,
                     {"backend": backend, "workers": workers, **throughput(summaries)})


def _complete(work: Path, out_dir: Path, n_parts: int, model: dict, sources: list, started: float,
              job: dict) -> "EmbeddingSet":
    """Writes embeddings.json from the parts' sidecars and renames ``work`` to ``out_dir``."""
    entries = []
    for n in range(n_parts):
        meta = json.loads((work / f"part-{n:05d}.json").read_text())
        entries.append({"name": f"part-{n:05d}.parquet", "rows": meta["rows"], "bytes": meta["bytes"],
                        "sha256": meta["sha256"], "dim": meta["dim"]})
    dims = {e.pop("dim") for e in entries}
    if len(dims) != 1:
        raise ArtifactError(f"{work}: parts have different embedding dimensions {sorted(dims)}")
    dim = dims.pop()
    body = {"dim": dim, "candidates": sum(e["rows"] for e in entries), "parts": entries}
    seconds = time.time() - started
    write_json(work / EMBEDDINGS_JSON, {
        "format": FORMAT, "scaleout_version": __version__, "fingerprint": json_fingerprint(body), **body,
        "model": model, "candidate_files": sources, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "job": {"seconds": round(seconds, 3), **job},
    })
    (work / PLAN_JSON).unlink(missing_ok=True)
    for n in range(n_parts):
        (work / f"part-{n:05d}.json").unlink()
    replace_dir(work, out_dir)
    log.info("embeddings of %s candidates (dim %d) in %s after %.1f s", f"{body['candidates']:,}", dim, out_dir,
             seconds)
    return EmbeddingSet(out_dir)


def _all_ids(work: Path, n_parts: int) -> pa.ChunkedArray:
    return pa.chunked_array([pq.read_table(work / f"part-{n:05d}.parquet", columns=[ID]).column(ID).combine_chunks()
                             for n in range(n_parts)], type=pa.string())


def _check_ids(work: Path, n_parts: int, expected_rows: int, source: str) -> pa.ChunkedArray:
    """DataError unless every id of ``source`` has exactly one embedding; returns the ids."""
    ids = _all_ids(work, n_parts)
    if len(ids) != expected_rows:
        raise DataError(f"{work}: {len(ids):,} embeddings for {expected_rows:,} rows of {source}")
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(repeated):
        first = repeated[0].as_py()
        raise DataError(f"id {first['values']!r} appears {first['counts']} times in {source}; "
                        "every candidate needs exactly one row")
    return ids


def throughput(summaries: list[dict]) -> dict:
    """Candidates per second of the parts embedded in this run: per worker and all together.

    ``per_worker``: rows / seconds a worker spent on its parts (tower, Parquet
    writing, checksum); ``tower_per_worker``: rows / seconds in the tower alone.
    ``all_workers``: the per-worker rates summed (all workers busy at once).
    ``steady``: rows / (last part's end - first part's start), excluding worker
    start-up (loading TensorFlow and the tower), but including any time when
    only some workers had started.
    """
    if not summaries:
        return {"embedded_now": 0}
    by_worker: dict[str, list[float]] = {}
    for s in summaries:
        acc = by_worker.setdefault(s["worker"], [0, 0.0, 0.0])
        acc[0] += s["rows"]
        acc[1] += s["end"] - s["start"]
        acc[2] += s.get("tower_seconds", 0.0)
    rows = sum(s["rows"] for s in summaries)
    span = max(s["end"] for s in summaries) - min(s["start"] for s in summaries)
    per_worker = {w: round(r / max(t, 1e-9)) for w, (r, t, _) in by_worker.items()}
    return {"embedded_now": rows, "per_worker_candidates_per_s": per_worker,
            "tower_per_worker_candidates_per_s": {w: round(r / max(t, 1e-9)) for w, (r, _, t) in by_worker.items()},
            "all_workers_candidates_per_s": sum(per_worker.values()),
            "steady_candidates_per_s": round(rows / max(span, 1e-9))}


# --------------------------------------------------------------------------- reading back
