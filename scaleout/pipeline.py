"""The main job: prepare, train, evaluate, embed and index, evaluate through the indexes, export, recommend."""

from __future__ import annotations

import logging
import time

from scaleout.config import DataConfig, IndexConfig, ModelConfig, TrainConfig
from scaleout.data.prepare import prepare
from scaleout.rundir import RunDir

log = logging.getLogger(__name__)


def run_pipeline(run: RunDir, data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 user: str, k: int, export_k: int, index_cfg: IndexConfig = IndexConfig(), exclude_seen: bool = False,
                 baselines: tuple[str, ...] = ("popularity", "ease", "ials")) -> dict:
    """Runs every stage of one run into ``run``; returns a summary of what each produced.

    The embedding job uses the training backend (with ``ray``, the cluster
    connected for training).
    """
    # TensorFlow is imported only once a stage needs it.
    from scaleout.export import Catalogue
    from scaleout.indexer import evaluate_through_indexes, index_run
    from scaleout.quality import format_report, headline, quality_report, quality_sentence
    from scaleout.train import train_run

    start = time.monotonic()
    dataset = prepare(data_cfg, run.data)
    metrics = train_run(run, model_cfg, train_cfg)
    indexed = index_run(run, backend=train_cfg.backend, workers=train_cfg.workers,
                        cpus_per_worker=train_cfg.cpus_per_worker, index_cfg=index_cfg)
    through = evaluate_through_indexes(run)
    catalogue = Catalogue(run)
    exports = {kind: str(catalogue.export(kind, run.export(kind), export_k, exclude_seen))
               for kind in ("brute_force", "scann")}
    recs = {kind: catalogue.recommend(user, k, kind, exclude_seen).titles for kind in ("brute_force", "scann")}
    quality = quality_report(run, baselines)
    log.info("quality on the test split (%s; written to %s):\n%s", quality_sentence(quality), run.quality_metrics,
             format_report(quality))
    summary = {
        "run": str(run.root),
        "counts": dataset.counts,
        "metrics": metrics,
        "index": {kind: info for kind, info in indexed["indexes"].items()},
        "embeddings": indexed["embeddings"],
        "through_index": {kind: through[kind] for kind in ("brute_force", "scann")},
        "recommendations": {"user_id": user, **recs},
        "exports": exports,
        "quality": headline(quality),
        "seconds": round(time.monotonic() - start, 1),
    }
    log.info("pipeline finished in %.1f s", summary["seconds"])
    return summary
