"""The index job: candidate embeddings -> indexes, recorded in RUN/artifacts.json.

``index_run`` is the heart of ``scaleout index`` and jobs/embed_index.py: it
embeds every candidate (scaleout.embed, locally or on Ray), or imports
embeddings made elsewhere, builds the requested indexes from the embeddings,
saves them under RUN/index/KIND and records all of it in RUN/artifacts.json.
``open_index`` loads an index back and refuses one built from other embeddings
or of another dimension.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scaleout import artifacts, storage
from scaleout.config import IndexConfig, IndexJobConfig
from scaleout.data.dataset import MANIFEST, Dataset
from scaleout.embed.embedding_set import ID, EmbeddingSet
from scaleout.embed.imports import import_embeddings
from scaleout.embed.job import Stored, embed_candidates
from scaleout.errors import ArtifactError
from scaleout.fsutil import tree_fingerprint
from scaleout.index.base import Index, check_embeddings
from scaleout.index.brute_force import BruteForce
from scaleout.index.load import load_index
from scaleout.index.scann import Scann
from scaleout.names import BRUTE_FORCE, SCANN
from scaleout.rundir import PARTIAL, RunDir
from scaleout.train.saved import MODEL_JSON, Towers, check_tower_files, check_trained_on, model_info

log = logging.getLogger(__name__)


def index_run(run: RunDir, cfg: IndexJobConfig = IndexJobConfig()) -> dict:
    """Embeds the candidates with RUN/model (or imports ``cfg.embeddings``), builds ``cfg.kinds``; returns a summary.

    Evaluation and exports (the rest of ``cfg``) are the caller's to run after.
    """
    started = time.monotonic()
    source = cfg.candidates or run.data / "candidates.parquet"  # a path, or a URI the embedding job reads
    dataset = Dataset(run.data) if (run.data / MANIFEST).is_file() else None
    trained = (run.model / MODEL_JSON).is_file()
    if not trained and not cfg.embeddings:
        model_info(run.model)  # "no trained model here": before anything is recorded
    if dataset is not None and trained:
        check_trained_on(run.model, dataset)  # embeddings of a model over other data would serve the wrong items
    if trained:
        for tower in ("query_tower", "candidate_tower"):  # checked before they are recorded, or anything is written
            check_tower_files(run.model, tower)
        for tower in ("query_tower", "candidate_tower"):
            artifacts.record(run, tower, inputs=("vocabularies",), path=f"model/{tower}")
    if cfg.embeddings:
        table = _candidate_ids(source)
        dim = query_dim(Towers.load(run.model, dataset).query) if (run.model / MODEL_JSON).is_file() else None
        emb = import_embeddings(cfg.embeddings, run.embeddings, None if table is None else
                                table.column(ID).combine_chunks().cast(pa.string()), dim, cfg.embed.part_rows)
        artifacts.record(run, "embeddings", fp=emb.fingerprint, dim=emb.dim, candidates=len(emb), path="embeddings",
                         imported_from=str(cfg.embeddings))
    else:
        emb = embed_candidates(run.model, source, run.embeddings, cfg.embed, stored=_stored(run, cfg, source))
        if emb is None:
            return {"embeddings": {"complete": False}, "indexes": {}}
        artifacts.record(run, "embeddings", inputs=("candidate_tower",), fp=emb.fingerprint, dim=emb.dim,
                         candidates=len(emb), path="embeddings")
    summary = {"embeddings": {"path": run.shown("embeddings"), "candidates": len(emb), "dim": emb.dim,
                              **emb.meta["job"]}, "indexes": build_indexes(run, emb, cfg.kinds, cfg.index)}
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _candidate_ids(source) -> pa.Table | None:
    """The id column of the candidate table ``source`` (a path or URI), or None when there is none."""
    if storage.is_remote(str(source)):
        if not storage.exists(str(source)):
            return None
        fs, path = storage.filesystem(str(source))
        return pq.read_table(path, columns=[ID], filesystem=fs)
    return pq.read_table(source, columns=[ID]) if Path(source).exists() else None


def _stored(run: RunDir, cfg: IndexJobConfig, source) -> Stored | None:
    """For the Ray backend on a remote run: the URIs its actors read and write instead of the driver's files."""
    if run.remote is None or cfg.embed.backend != "ray":
        return None
    run.sync()  # the model this command trained, committed before other nodes look for it
    candidates = {}
    if not cfg.candidates:
        candidates[str(Path(source).resolve())] = run.stored_file("data", "candidates.parquet")
    return Stored(model=run.remote_uri("model"), work=run.remote_uri(PARTIAL), candidates=candidates)


def build_indexes(run: RunDir, emb: EmbeddingSet, kinds: tuple[str, ...], index_cfg: IndexConfig) -> dict:
    ids, vectors, _ = emb.load()
    check_embeddings(ids, vectors)
    built = {}
    for kind in kinds:
        start = time.monotonic()
        index = BruteForce() if kind == BRUTE_FORCE else Scann(index_cfg)
        index.build(ids, vectors)
        seconds = time.monotonic() - start
        index.save(run.index(kind), source={"embeddings": emb.fingerprint, "dim": emb.dim, "candidates": len(emb)})
        info = {"build_seconds": round(seconds, 3), "candidates": len(ids)}
        if kind == SCANN:
            info.update(mode=index.mode, num_leaves=index.num_leaves)
        artifacts.record(run, f"index/{kind}", inputs=("embeddings",), path=f"index/{kind}", **info)
        log.info("built the %s index of %s candidates in %.1f s%s", kind, f"{len(ids):,}", seconds,
                 f" (mode {index.mode})" if kind == SCANN else "")
        built[kind] = info
    return built


def check_embeddings_of_model(run: RunDir, emb: EmbeddingSet) -> None:
    """ArtifactError unless ``emb`` was computed by RUN/model's candidate tower."""
    if "imported_from" in emb.meta["model"]:
        log.info("%s were imported from %s: their model cannot be checked, only their dimension", emb.path,
                 emb.meta["model"]["imported_from"])
        return
    made_by = emb.meta["model"]["candidate_tower"]
    now = tree_fingerprint(run.model / "candidate_tower")
    if made_by != now:
        raise ArtifactError(f"{emb.path}: the embeddings were computed by another candidate tower ({made_by[:12]}) "
                            f"than {run.model} holds ({now[:12]}); run `scaleout index` again")


def open_index(run: RunDir, kind: str, emb: EmbeddingSet) -> Index:
    """RUN/index/KIND, checked against the embeddings it must have been built from."""
    path = run.index(kind)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no {kind} index here; run `scaleout index --indexes {kind}`")
    index = load_index(path)
    source = index.meta.get("source", {})
    if source.get("dim") != emb.dim:
        raise ArtifactError(f"{path}: holds {source.get('dim')}-dimensional embeddings; {emb.path} holds "
                            f"{emb.dim}-dimensional ones; rebuild the index with `scaleout index`")
    if source.get("embeddings") != emb.fingerprint:
        raise ArtifactError(f"{path}: built from other embeddings ({str(source.get('embeddings'))[:12]}) than "
                            f"{emb.path} ({emb.fingerprint[:12]}); rebuild the index with `scaleout index`")
    return index


def query_dim(query_tower) -> int:
    return int(query_tower.output_shape[-1])


def check_query_dim(query_tower, emb: EmbeddingSet) -> None:
    if query_dim(query_tower) != emb.dim:
        raise ArtifactError(f"the query tower gives {query_dim(query_tower)}-dimensional embeddings but "
                            f"{emb.path} holds {emb.dim}-dimensional candidates; they come from different models")
