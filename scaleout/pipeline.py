"""The main job: prepare, train, evaluate, recommend for one user, export."""

from __future__ import annotations

import logging
import time

from scaleout.config import DataConfig, ModelConfig, TrainConfig
from scaleout.data.prepare import prepare
from scaleout.rundir import RunDir

log = logging.getLogger(__name__)


def run_pipeline(run: RunDir, data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 user: str, k: int, export_k: int) -> dict:
    """Runs every stage of one run into ``run``; returns a summary of what each produced."""
    # TensorFlow is imported only once a stage needs it.
    from scaleout.export import Catalogue
    from scaleout.train import train_run

    start = time.monotonic()
    dataset = prepare(data_cfg, run.data)
    metrics = train_run(run, model_cfg, train_cfg)
    catalogue = Catalogue(dataset, run.model)
    rec = catalogue.recommend(user, k)
    export_dir = catalogue.export_brute_force(run.export("brute_force"), export_k)
    summary = {
        "run": str(run.root),
        "counts": dataset.counts,
        "metrics": metrics,
        "recommendations": {"user_id": user, "titles": rec.titles},
        "export": str(export_dir),
        "seconds": round(time.monotonic() - start, 1),
    }
    log.info("pipeline finished in %.1f s", summary["seconds"])
    return summary
