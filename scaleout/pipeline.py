"""On top of the stages: connecting to Ray, the embed-and-index job, and the main job (every stage in turn).

The command line (scaleout.cli) and the Ray jobs (jobs/*.py) parse their
options into configs and call one function here or in a stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time

from scaleout.config import DataConfig, EmbedConfig, IndexJobConfig, PipelineConfig, defaults
from scaleout.data.dataset import MANIFEST, Dataset
from scaleout.data.prepare import prepare
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError, settings_differ
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


def _checkpoint(run: RunDir, cfg: PipelineConfig) -> tuple[str, dict] | None:
    """(path, state) of the run's newest checkpoint, or None; looked for once, before anything is prepared.
    Without ``--resume``, an earlier run's checkpoints are refused here, before RUN/data is replaced: training
    would refuse them anyway, after the data they were trained on had been prepared again from a source that
    may have changed since. With it, a run with no checkpoint and no trained model is refused."""
    from scaleout.train.checkpoints import RUN_NAME, check_resume, find_latest_checkpoint
    from scaleout.train.ray_backend import storage_location
    from scaleout.train.saved import MODEL_JSON

    location = storage_location(run, cfg.train)
    if not cfg.train.resume:
        return check_resume(location, None, resume=False)
    found = find_latest_checkpoint(location)
    if found is None and not (run.model / MODEL_JSON).is_file():
        raise ArtifactError(f"--resume: nothing to resume: no checkpoint under {location}/{RUN_NAME} and no "
                            f"trained model in {run.shown('model')}")
    return found


def _prepared(run: RunDir, cfg: PipelineConfig) -> Dataset:
    """RUN/data for the main job: prepared from ``cfg.data``; under ``--resume``, the data already there where it
    was prepared with the same settings (the run continues on what it trained on, and 100M interactions are not
    prepared twice), an error naming each setting where it was prepared otherwise."""
    if not cfg.train.resume or not (run.data / MANIFEST).is_file():
        return prepare(cfg.data, run.data)
    dataset = Dataset(run.data)
    detail = settings_differ(dataset.manifest.get("config", {}), json.loads(json.dumps(dataclasses.asdict(cfg.data))),
                             "prepared with", defaults(DataConfig))
    if detail:
        raise ConfigError(f"--resume: {run.shown('data')} was prepared with other settings ({detail}); resume with "
                          "its settings, or start the run again without --resume")
    log.info("prepare: --resume continues on %s, prepared %s with these settings", run.shown("data"),
             dataset.manifest.get("created"))
    return dataset


def _trained(run: RunDir, dataset: Dataset, cfg: PipelineConfig, stages: Stages,
             checkpoint: tuple[str, dict] | None) -> dict:
    """The train and evaluate stages; returns the test metrics ({} where evaluation is skipped). Under
    ``--resume``: training continues from its newest checkpoint, or, with none left (``checkpoint`` None), a
    model already saved from this data with these settings is kept (a main job that stopped after training)."""
    from scaleout.train.run import evaluate_run, finished_model, train_run

    evaluate = "evaluate" not in cfg.skip
    if cfg.train.resume and checkpoint is None and finished_model(run, dataset, cfg.model, cfg.train):
        log.info("train: --resume keeps %s, trained on this data with these settings (its checkpoints went once it "
                 "was saved)", run.shown("model"))
        if not evaluate:
            return {}
        with stages("evaluate"):
            return evaluate_run(run, cfg.train)
    # (--resume with no checkpoint and no model, removed since it was looked for: training refuses it in one line)
    return train_run(run, cfg.model, cfg.train, stages, evaluate_test=evaluate)


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

    start = time.monotonic()
    stages = Stages()
    with stages("prepare"):
        checkpoint = _checkpoint(run, cfg)
        dataset = _prepared(run, cfg)
    run.sync()  # each stage committed as it ends (a remote run): a later failure keeps it
    metrics = _trained(run, dataset, cfg, stages, checkpoint)
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
