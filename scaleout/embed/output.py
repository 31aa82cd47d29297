"""The files of an embeddings directory while it is being made: parts, their sidecars, and the finished set.

Each part is written as ``part-NNNNN.parquet`` under a temporary name and
renamed when complete, with a sidecar ``part-NNNNN.json`` (rows, bytes,
sha256, timing). ``complete_set`` turns a directory of complete parts into a
finished set (embeddings.json, see scaleout.embed.embedding_set) and renames it
into place. Shared by the embedding job and the import of embeddings made
elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaleout import __version__, storage
from scaleout.embed.embedding_set import EMBEDDINGS_JSON, FORMAT, ID, TITLE, VECTOR, EmbeddingSet
from scaleout.errors import ArtifactError, DataError
from scaleout.fsutil import json_fingerprint, moved, replace_dir, sha256, utc_now, write_json
from scaleout.names import part_name
from scaleout.scratch import scratch

log = logging.getLogger(__name__)

EMBED_BATCH = 65_536
PLAN_JSON = "plan.json"


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.field("item", pa.float32(), nullable=False), dim)


def write_part(out_dir: Path, number: int, ids: pa.Array, titles: pa.Array, vectors: np.ndarray, started: float,
               worker: str, tower_seconds: float = 0.0) -> dict:
    """Writes one part file (temporary name, then renamed) and its sidecar; returns the sidecar's content."""
    dim = vectors.shape[1]
    out = pa.table({ID: ids, TITLE: titles,
                    VECTOR: pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), type=vector_type(dim))})
    name = part_name(number)
    remote = storage.is_remote(str(out_dir))
    with scratch("part") if remote else contextlib.nullcontext(out_dir) as local:
        tmp = Path(local) / f".{name}.tmp-{os.getpid()}"
        # Non-null floats without statistics or compression: the list column dominates the writing time.
        pq.write_table(out, tmp, row_group_size=EMBED_BATCH, use_dictionary=[TITLE], write_statistics=[ID],
                       compression={ID: "zstd", TITLE: "zstd", VECTOR: "none"})
        size = tmp.stat().st_size
        digest = sha256(tmp)
        if remote:  # straight to the store: the driver may be on another node
            storage.upload_file(tmp, storage.join(str(out_dir), name))
        else:
            os.replace(tmp, out_dir / name)
            moved(tmp, out_dir / name)
    summary = {"part": number, "rows": out.num_rows, "dim": dim, "bytes": size, "sha256": digest,
               "start": started, "end": time.time(), "tower_seconds": tower_seconds, "worker": worker}
    if remote:  # the sidecar last: a part counts as done only once it is there
        storage.write_bytes(storage.join(str(out_dir), part_name(number, "json")),
                            json.dumps(summary, indent=2, sort_keys=True).encode())
    else:
        write_json(out_dir / part_name(number, "json"), summary)
    return summary


def complete_set(work: Path, out_dir: Path, n_parts: int, model: dict, sources: list, started: float,
              job: dict) -> "EmbeddingSet":
    """Writes embeddings.json from the parts' sidecars and renames ``work`` to ``out_dir``."""
    entries = []
    for n in range(n_parts):
        meta = json.loads((work / part_name(n, "json")).read_text())
        entries.append({"name": part_name(n), "rows": meta["rows"], "bytes": meta["bytes"],
                        "sha256": meta["sha256"], "dim": meta["dim"]})
    dims = {e.pop("dim") for e in entries}
    if len(dims) != 1:
        raise ArtifactError(f"{work}: parts have different embedding dimensions {sorted(dims)}")
    dim = dims.pop()
    body = {"dim": dim, "candidates": sum(e["rows"] for e in entries), "parts": entries}
    seconds = time.time() - started
    write_json(work / EMBEDDINGS_JSON, {
        "format": FORMAT, "scaleout_version": __version__, "fingerprint": json_fingerprint(body), **body,
        "model": model, "candidate_files": sources, "created": utc_now(),
        "job": {"seconds": round(seconds, 3), **job},
    })
    (work / PLAN_JSON).unlink(missing_ok=True)
    for n in range(n_parts):
        (work / part_name(n, "json")).unlink()
    replace_dir(work, out_dir, EMBEDDINGS_JSON)
    log.info("embeddings of %s candidates (dim %d) in %s after %.1f s", f"{body['candidates']:,}", dim, out_dir,
             seconds)
    return EmbeddingSet(out_dir)


def all_ids(work: Path, n_parts: int) -> pa.ChunkedArray:
    return pa.chunked_array([pq.read_table(work / part_name(n), columns=[ID]).column(ID).combine_chunks()
                             for n in range(n_parts)], type=pa.string())


def check_ids(work: Path, n_parts: int, expected_rows: int, source: str) -> pa.ChunkedArray:
    """DataError unless every id of ``source`` has exactly one embedding; returns the ids."""
    ids = all_ids(work, n_parts)
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
