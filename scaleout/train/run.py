"""``scaleout train`` and ``scaleout evaluate``: a run's model fitted (locally or on Ray), saved and evaluated."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from scaleout.config import ModelConfig, TrainConfig
from scaleout.data.dataset import Dataset
from scaleout.errors import ConfigError, settings_differ
from scaleout.fsutil import atomic_dir, check_replaceable, tree_fingerprint, write_json
from scaleout.tfenv import tf
from scaleout.rundir import RunDir
from scaleout.scratch import scratch
from scaleout.stages import Stages
from scaleout.train import profile
from scaleout.train.checkpoints import IDENTITY_DEFAULTS, NothingToResume, resume_identity
from scaleout.train.local import evaluate, fit_checkpointed, remove_checkpoints
from scaleout.train.ray_backend import fit_ray, profile_location, storage_location
from scaleout.train.saved import MODEL_JSON, Towers, check_trained_on, model_info, save_model

log = logging.getLogger(__name__)

SCALARS = "scalars.json"


def train_run(run: RunDir, model_cfg: ModelConfig, train_cfg: TrainConfig,
              stages: Stages | None = None, evaluate_test: bool = True) -> dict[str, float]:
    """Fits on RUN/data, saves RUN/model, writes RUN/metrics/{train,eval}.json; returns the test metrics.

    With ``train_cfg.backend == "ray"`` the caller has connected to a Ray
    cluster (see scaleout.train.ray_backend.fit_ray). ``stages`` times
    training ("train") and evaluation ("evaluate") separately. Without
    ``evaluate_test``, no evaluation: no eval.json, and no metrics returned.
    """
    stages = stages or Stages()
    with stages("train"):
        dataset = Dataset(run.data)
        model = _fit_and_save(run, dataset, model_cfg, train_cfg)
    if not evaluate_test:
        return {}
    with stages("evaluate"):
        metrics = evaluate(model, dataset, train_cfg)
        _write_eval(run, dataset, metrics)
    return metrics


def _fit(run: RunDir, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, traces: Path, location: str):
    """(model, history, the epochs resumed at, the traced directory of one process's profiled epoch or []);
    ``location``: where the checkpoints are kept."""
    if train_cfg.backend == "ray":
        return (*fit_ray(run, model_cfg, train_cfg), [])
    tracer = profile.EpochProfile(train_cfg.profile_epoch, traces / "worker-0") if train_cfg.profile_epoch else None
    try:
        model, history, resumed_at = fit_checkpointed(dataset, model_cfg, train_cfg, [tracer] if tracer else None,
                                                      location=location)
    finally:
        if tracer:
            tracer.close()
    return model, history, resumed_at, [traces / "worker-0"] if tracer else []


def _fit_and_save(run: RunDir, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig):
    if train_cfg.profile_epoch:  # refused before training, not after it
        check_replaceable(run.profile, profile.MARKER)
    location = storage_location(run, train_cfg)
    with scratch("profile") as traces:
        start = time.monotonic()
        try:
            model, history, resumed_at, traced = _fit(run, dataset, model_cfg, train_cfg, traces, location)
        except NothingToResume as error:
            _name_finished_model(run, error)
            raise
        fit_seconds = time.monotonic() - start
        if train_cfg.profile_epoch and train_cfg.backend == "ray":  # the workers' traces, from their storage
            traced = profile.fetch(profile_location(location), train_cfg.workers, traces)
        if traced:
            profile.mark_profiled(history, train_cfg.profile_epoch)
            profile.write_profile(run.profile, traced, {
                "backend": train_cfg.backend, "data": run.shown("data"),
                "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg)})
    save_model(model, run.model, model_cfg, train_cfg, dataset)
    write_json(run.train_metrics, {"epochs": history, "fit_seconds": round(fit_seconds, 3),
                                   "resumed_at_epochs": resumed_at, "backend": train_cfg.backend,
                                   # what one step sends between replicas (ray backend; one process: nothing)
                                   "collectives_per_step": model.step_collectives,
                                   # TensorFlow's CPU allocator where it trained (the workers', under Ray)
                                   "cpu_allocator": model.trained_allocator,
                                   # where the workers ran: each on CPUs of its own, or why not (scaleout.train.cpus)
                                   "cpu_pinning": model.trained_pinning,
                                   "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg)})
    write_scalars(run.tensorboard, history)
    if train_cfg.backend == "local":  # the model they insured is saved (Ray Train keeps its own, see README)
        removed = remove_checkpoints(location)
        if removed:
            log.info("removed the run's %d local checkpoint(s) under %s: the model is saved", removed, location)
    return model


def _name_finished_model(run: RunDir, error: NothingToResume) -> None:
    """Where ``--resume`` found no checkpoint but RUN/model holds a trained model (a finished local run: its
    checkpoints went once it was saved), an error that says so and what to do instead."""
    if (run.model / MODEL_JSON).is_file():
        trained = model_info(run.model).get("train", {})
        raise NothingToResume(
            f"{error}: {run.shown('model')} holds the model this run trained ({trained.get('epochs')} epochs, backend "
            f"{trained.get('backend')}) and its checkpoints are gone (the local backend removes them once the model "
            "is saved), so it is not trained further; train again without --resume (--epochs for longer), or let "
            "`scaleout pipeline --resume` keep it") from None


def write_scalars(directory: Path, history: list[dict]) -> None:
    """Each epoch's loss per example, examples/s, seconds and learning rate as TensorBoard scalars (``tensorboard
    --logdir RUN/metrics/tensorboard``), written by this process from the history, whichever backend trained, so that
    nothing depends on a worker's disk; replaced whole, as train.json is (``scalars.json``, the same figures,
    marks the directory as scaleout's)."""
    with atomic_dir(directory, SCALARS) as tmp:
        write_json(tmp / SCALARS, {"epochs": history})
        writer = tf.summary.create_file_writer(str(tmp / "train"))
        with writer.as_default():
            for entry in history:
                for name in ("loss_per_example", "examples_per_second", "seconds", "learning_rate"):
                    if name in entry:
                        tf.summary.scalar(name, entry[name], step=entry["epoch"])
        writer.close()


def finished_model(run: RunDir, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig) -> bool:
    """Whether RUN/model is what this training saves at its end: trained on ``dataset`` with these settings, all
    ``train_cfg.epochs`` of them (the local backend's checkpoints go once it is saved, so a resumed main job that
    stopped after training finds the model, not them). False where there is no model; an error naming each
    difference for a model trained otherwise, which ``--resume`` does not replace."""
    if not (run.model / MODEL_JSON).is_file():
        return False
    info = model_info(run.model)
    check_trained_on(run.model, dataset, info)
    identity = resume_identity(model_cfg, train_cfg, dataset)  # the data is checked above, by its fingerprint
    now = {k: v for k, v in identity.items() if k.startswith(("model.", "train."))} | {"train.epochs": train_cfg.epochs}
    saved = {}
    for key in now:
        part, name = key.split(".", 1)
        if name in info.get(part, {}):
            saved[key] = info[part][name]
    detail = settings_differ(saved, now, "model", IDENTITY_DEFAULTS)
    if detail:
        raise ConfigError(f"--resume: {run.shown('model')} was trained with other settings ({detail}) and has no "
                          "checkpoint to continue; train it again without --resume")
    return True


def evaluate_run(run: RunDir, train_cfg: TrainConfig) -> dict[str, float]:
    """Evaluates the saved towers of RUN/model on the test split; rewrites RUN/metrics/eval.json."""
    dataset = Dataset(run.data)
    towers = Towers.load(run.model, dataset)
    metrics = evaluate(towers.as_model(dataset), dataset, train_cfg)
    _write_eval(run, dataset, metrics)
    return metrics


def towers_made_from(run: RunDir, towers: tuple[str, ...] = ("query_tower", "candidate_tower")) -> dict[str, str]:
    """Each tower's fingerprint, as scaleout.artifacts takes it: what a metrics file of the model records it was
    made from (``made_from``), so that `scaleout verify` names one left from a model trained since."""
    return {name: tree_fingerprint(run.model / name) for name in towers}


def _write_eval(run: RunDir, dataset: Dataset, metrics: dict[str, float]) -> None:
    write_json(run.eval_metrics, {"metrics": metrics, "split": "test", "examples": dataset.counts["test"],
                                  "candidates": dataset.counts["candidates"], "model": run.shown("model"),
                                  "made_from": towers_made_from(run)})
    shown = {k.split("/")[-1]: round(v, 4) for k, v in metrics.items() if k.startswith("factorized_top_k/")}
    log.info("test metrics: %s (written to %s)", shown, run.eval_metrics)
