"""The indexer: candidate embeddings -> indexes -> evaluation through each index.

``index_run`` is ``scaleout index`` and jobs/embed_index.py: it embeds every
candidate (scaleout.embeddings, locally or on Ray), builds the requested
indexes from the embeddings, saves them under RUN/index/KIND and records all
of it in RUN/artifacts.json. ``open_index`` loads an index back and refuses
one built from other embeddings or of another dimension.
``evaluate_through_indexes`` runs TFRS's FactorizedTopK over the test split
with each index as the candidate source, so the model's recall and the
index's recall are reported apart.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from scaleout import artifacts
from scaleout.config import IndexConfig
import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.embeddings import DEFAULT_PART_ROWS, ID, EmbeddingSet, embed_candidates
from scaleout.embeddings_import import import_embeddings
from scaleout.errors import ArtifactError, ConfigError
from scaleout.fsutil import tree_fingerprint, write_json
from scaleout.index import KINDS, BruteForce, Index, Scann, check_embeddings, load_index
from scaleout.rundir import RunDir

log = logging.getLogger(__name__)
INDEX_KINDS = tuple(KINDS)


def index_run(run: RunDir, *, backend: str = "local", workers: int = 1, cpus_per_worker: int = 1,
              part_rows: int = DEFAULT_PART_ROWS, kinds: tuple[str, ...] = INDEX_KINDS,
              index_cfg: IndexConfig = IndexConfig(), candidates: str | Path | None = None,
              embeddings: str | Path | None = None, max_parts: int | None = None) -> dict:
    """Embeds the candidates with RUN/model (or imports ``embeddings``), builds ``kinds`` indexes; returns a summary."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"unknown index kinds {unknown}; expected some of {', '.join(KINDS)}")
    started = time.monotonic()
    source = Path(candidates) if candidates else run.data / "candidates.parquet"
    for tower in ("query_tower", "candidate_tower"):
        artifacts.record(run, tower, inputs=("vocabularies",), path=f"model/{tower}")
    if embeddings:
        from scaleout.train import Towers

        table = pq.read_table(source, columns=[ID]) if Path(source).exists() else None
        dim = query_dim(Towers.load(run.model).query) if (run.model / "model.json").is_file() else None
        emb = import_embeddings(embeddings, run.embeddings, None if table is None else table.column(ID).combine_chunks()
                                .cast(pa.string()), dim, part_rows)
        artifacts.record(run, "embeddings", fp=emb.fingerprint, dim=emb.dim, candidates=len(emb), path="embeddings",
                         imported_from=str(embeddings))
    else:
        emb = embed_candidates(run.model, source, run.embeddings, backend=backend, workers=workers,
                               cpus_per_worker=cpus_per_worker, part_rows=part_rows, max_parts=max_parts)
        if emb is None:
            return {"embeddings": {"complete": False}, "indexes": {}}
        artifacts.record(run, "embeddings", inputs=("candidate_tower",), fp=emb.fingerprint, dim=emb.dim,
                         candidates=len(emb), path="embeddings")
    summary = {"embeddings": {"path": str(run.embeddings), "candidates": len(emb), "dim": emb.dim,
                              **emb.meta["job"]}, "indexes": build_indexes(run, emb, kinds, index_cfg)}
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def build_indexes(run: RunDir, emb: EmbeddingSet, kinds: tuple[str, ...], index_cfg: IndexConfig) -> dict:
    ids, vectors, _ = emb.load()
    check_embeddings(ids, vectors)
    built = {}
    for kind in kinds:
        start = time.monotonic()
        index = BruteForce() if kind == "brute_force" else Scann(index_cfg)
        index.build(ids, vectors)
        seconds = time.monotonic() - start
        index.save(run.index(kind), source={"embeddings": emb.fingerprint, "dim": emb.dim, "candidates": len(emb)})
        info = {"build_seconds": round(seconds, 3), "candidates": len(ids)}
        if kind == "scann":
            info.update(mode=index.mode, num_leaves=index.num_leaves)
        artifacts.record(run, f"index/{kind}", inputs=("embeddings",), path=f"index/{kind}", **info)
        log.info("built the %s index of %s candidates in %.1f s%s", kind, f"{len(ids):,}", seconds,
                 f" (mode {index.mode})" if kind == "scann" else "")
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


# --------------------------------------------------------------------------- evaluation


def index_top_k(index: Index, k: int, answers: list | None = None, **search_settings):
    """A TFRS TopK layer answering from ``index`` (for FactorizedTopK): exact for BruteForce.

    Called eagerly, it appends each batch's retrieved ids to ``answers``.
    """
    from scaleout.model import tf, tfrs

    class IndexTopK(tfrs.layers.factorized_top_k.TopK):
        def __init__(self):
            super().__init__(k=k)

        def index(self, candidates, identifiers=None):
            raise NotImplementedError("IndexTopK answers from a built scaleout index")

        def call(self, queries, k=None):
            k = k or self._k

            def search(q):
                scores, ids = index.search(q, k, **search_settings)
                if answers is not None:
                    answers.append(ids)
                return scores.astype(np.float32), ids.astype(object)

            scores, ids = tf.numpy_function(search, [queries], [tf.float32, tf.string], stateful=False)
            scores.set_shape([None, k])
            ids.set_shape([None, k])
            return scores, ids

        def is_exact(self):
            return isinstance(index, BruteForce)

    return IndexTopK()


def evaluate_through_indexes(run: RunDir, kinds: tuple[str, ...] = INDEX_KINDS,
                             ks: tuple[int, ...] = (1, 5, 10, 50, 100), batch_size: int = 4096) -> dict:
    """FactorizedTopK on the test split with each index as the candidate source; writes RUN/metrics/index_eval.json.

    Also reports each approximate index's recall@k against BruteForce's answers
    for the same test queries (the index's own loss, apart from the model's).
    """
    from scaleout.data.dataset import Dataset
    from scaleout.data.tfdata import iter_batches
    from scaleout.model import TIMESTAMP_FEATURE, query_embeddings, tf, tfrs, uses_timestamp
    from scaleout.train import Towers

    dataset, towers, emb = Dataset(run.data), Towers.load(run.model), EmbeddingSet(run.embeddings)
    check_embeddings_of_model(run, emb)
    check_query_dim(towers.query, emb)
    ids, vectors, _ = emb.load()
    row_of = {c: i for i, c in enumerate(ids)}
    indexes = {kind: open_index(run, kind, emb) for kind in kinds}
    k_max = min(max(ks), len(ids))
    ks = tuple(k for k in ks if k <= k_max)
    answers: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}  # retrieved ids, filled by the metrics
    metrics = {kind: tfrs.metrics.FactorizedTopK(candidates=index_top_k(idx, k_max, answers[kind]), ks=ks)
               for kind, idx in indexes.items()}
    start = time.monotonic()
    # As model.evaluate: each test row's own timestamp, where the query tower takes one.
    columns = ["user_id", "movie_id"] + ([TIMESTAMP_FEATURE] if uses_timestamp(towers.query) else [])
    for batch in iter_batches(dataset.files("test"), columns, batch_size, 0, None):
        users = np.asarray(batch["user_id"]).astype(str).astype(object)
        movies = np.asarray(batch["movie_id"]).astype(str)
        queries = query_embeddings(towers.query, users, batch.get(TIMESTAMP_FEATURE))
        try:
            true = tf.constant(vectors[[row_of[m] for m in movies]])
        except KeyError as exc:
            raise ArtifactError(f"test movie {exc.args[0]!r} has no embedding in {emb.path}") from exc
        for kind, metric in metrics.items():
            metric.update_state(queries, true, true_candidate_ids=tf.constant(movies.astype(object)))
    seconds = time.monotonic() - start
    report: dict = {"ks": list(ks), "test_examples": dataset.counts["test"], "seconds": round(seconds, 2),
                    "embeddings": emb.fingerprint}
    for kind, metric in metrics.items():
        report[kind] = {f"factorized_top_k/top_{k}_categorical_accuracy": float(v)
                        for k, v in zip(ks, metric.result())}
        if kind == "scann":
            report[kind]["mode"] = indexes[kind].mode
            report[kind]["search"] = {k: v for k, v in indexes[kind].search_settings(k_max).items()}
    if "brute_force" in answers:
        exact = np.concatenate(answers["brute_force"])
        for kind in kinds:
            if kind != "brute_force":
                approx = np.concatenate(answers[kind])
                report[kind]["recall_vs_brute_force"] = {
                    f"@{k}": round(float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)])), 4)
                    for k in ks if k in (10, 100) or k == k_max}
    write_json(run.index_eval_metrics, report)
    for kind in kinds:
        top = report[kind].get(f"factorized_top_k/top_{ks[-1]}_categorical_accuracy")
        log.info("through %s: test top-%d %.4f", kind, ks[-1], top)
    return report
