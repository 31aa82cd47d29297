"""On top of the stages: connecting to Ray, the embed-and-index job, and the main job (every stage in turn).

The command line (scaleout.cli) and the Ray jobs (jobs/*.py) parse their
options into configs and call one function here or in a stage.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from scaleout.config import EmbedConfig, IndexJobConfig, PipelineConfig
from scaleout.data.prepare import prepare
from scaleout.errors import ScaleoutError
from scaleout.names import INDEX_KINDS, USER_ID
from scaleout.rundir import RunDir
from scaleout.stages import Stages
from scaleout.storage import forwarded_env
from scaleout.tfenv import RUNTIME_ENV_VARS

log = logging.getLogger(__name__)


def connect_ray(address: str | None) -> None:
    """Connects this process to a Ray cluster, with the environment scaleout's workers need."""
    import ray

    target = address or os.environ.get("RAY_ADDRESS")
    if target and target != "auto":
        _check_reachable(target)
    try:
        ray.init(address=address, runtime_env={"env_vars": {**RUNTIME_ENV_VARS, **forwarded_env()}},
                 log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ScaleoutError(f"cannot connect to the Ray cluster at {address or 'the default address'}: {exc}") from exc


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ScaleoutError unless host:port accepts a connection (ray.init would retry for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ScaleoutError(f"Ray address {address!r} is not host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ScaleoutError(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def index_job(run: RunDir, cfg: IndexJobConfig) -> dict:
    """``scaleout index`` and jobs/embed_index.py: embed, build the indexes, evaluate through them, export.

    With ``cfg.embed.backend == "ray"`` the caller has connected to a Ray cluster.
    """
    # TensorFlow is imported only once a stage needs it.
    from scaleout.evaluate.through_index import evaluate_through_indexes
    from scaleout.index.build import index_run
    from scaleout.serve.catalogue import Catalogue
    from scaleout.serve.export import export_retrieval

    summary = index_run(run, cfg)
    if not summary["indexes"]:
        return summary
    if cfg.evaluate:
        if cfg.candidates or cfg.embeddings:
            log.info("--candidates or --embeddings given: skipping the evaluation on RUN/data's test split")
        else:
            summary["evaluation"] = evaluate_through_indexes(run, cfg.kinds)
    if cfg.export:
        catalogue = Catalogue(run)
        summary["exports"] = {kind: str(export_retrieval(catalogue, kind, run.export(kind), cfg.export_k))
                              for kind in cfg.export}
    return summary


def run_pipeline(run: RunDir, cfg: PipelineConfig) -> dict:
    """Runs every stage of one run into ``run``; returns a summary of what each produced.

    The embedding job uses the training backend (with ``ray``, the cluster
    connected for training).
    """
    from scaleout.evaluate.quality import format_report, headline, quality_report, quality_sentence
    from scaleout.evaluate.through_index import evaluate_through_indexes
    from scaleout.index.build import index_run
    from scaleout.serve.catalogue import Catalogue
    from scaleout.serve.export import export_retrieval
    from scaleout.train.run import train_run

    start = time.monotonic()
    stages = Stages()
    with stages("prepare"):
        dataset = prepare(cfg.data, run.data)
    run.sync()  # each stage committed as it ends (a remote run): a later failure keeps it
    metrics = train_run(run, cfg.model, cfg.train, stages, evaluate_test="evaluate" not in cfg.skip)
    run.sync()
    embed_cfg = EmbedConfig(backend=cfg.train.backend, workers=cfg.train.workers,
                            cpus_per_worker=cfg.train.cpus_per_worker)
    with stages("embed_and_index"):
        indexed = index_run(run, IndexJobConfig(embed=embed_cfg, index=cfg.index))
    run.sync()
    through = exports = recs = quality = None
    if "through_index" not in cfg.skip:
        with stages("through_index"):
            through = evaluate_through_indexes(run, sample_users=cfg.sample_users, seed=cfg.sample_seed)
    if "export" not in cfg.skip:
        with stages("export"):
            catalogue = Catalogue(run)
            exports = {kind: str(export_retrieval(catalogue, kind, run.export(kind), cfg.export_k,
                                                  cfg.exclude_seen)) for kind in INDEX_KINDS}
            recs = {USER_ID: cfg.user, **{kind: catalogue.recommend(cfg.user, cfg.k, kind, cfg.exclude_seen).titles
                                          for kind in INDEX_KINDS}}
    if "quality" not in cfg.skip:
        with stages("quality"):
            quality = quality_report(run, cfg.baselines, cfg.sample_users, cfg.sample_seed)
        log.info("quality on the test split (%s; written to %s):\n%s", quality_sentence(quality), run.quality_metrics,
                 format_report(quality))
    if cfg.skip:
        log.info("skipped: %s", ", ".join(cfg.skip))
    summary = {
        "run": run.location,
        "counts": dataset.counts,
        "metrics": metrics or None,
        "index": dict(indexed["indexes"]),
        "embeddings": indexed["embeddings"],
        "through_index": through and {key: through[key] for key in (*INDEX_KINDS, "sample") if key in through},
        "recommendations": recs,
        "exports": exports,
        "quality": quality and headline(quality),
        "skipped": list(cfg.skip),
        "stages": stages.figures,
        "seconds": round(time.monotonic() - start, 1),
    }
    log.info("pipeline finished in %.1f s", summary["seconds"])
    return summary
