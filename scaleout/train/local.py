"""The local backend: fitting the two-tower model in this process, and evaluating it on the test split.

With a checkpoint ``location`` (``scaleout train``: RUN/checkpoints, or ``--storage``), the fit keeps a
checkpoint after every ``checkpoint_every`` epochs (at least ``checkpoint_min_interval`` seconds apart, the
last epoch's always) in the layout the Ray backend's take (``scaleout.train.checkpoints``): the towers' and
the optimizer's variables, then ``state.json`` last, so that a checkpoint cut short by a crash is passed
over. ``--resume`` continues the newest one, each epoch's input the pass the uninterrupted run would have
read. They are crash insurance for the one process: the caller removes them once the model is saved
(``remove_checkpoints``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pyarrow.fs as pafs

from scaleout import storage
from scaleout.config import ModelConfig, TrainConfig
from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import parquet_dataset
from scaleout.errors import ConfigError
from scaleout.fsutil import write_json
from scaleout.scratch import scratch
from scaleout.tfenv import tf
from scaleout.train.callbacks import EpochLog, EvaluationLog, learning_rate_schedule
from scaleout.train.checkpoints import (RUN_NAME, STATE, WEIGHTS, check_resume, check_storage, checkpoint_of,
                                        complete_checkpoints, epoch_due, epochs_left, resume_identity)
from scaleout.train.model import build_for_dataset

log = logging.getLogger(__name__)
KEPT = 2  # the newest complete checkpoints kept while training (as the Ray backend's num_to_keep)
PREFIX = "checkpoint_local-"  # then the epochs done, six digits


def fit(dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks: list | None = None):
    """Trains a fresh model on the train split, keeping no checkpoints; returns (model, per-epoch history)."""
    return fit_checkpointed(dataset, model_cfg, train_cfg, callbacks)[:2]


def fit_checkpointed(dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks: list | None = None,
                     location: str | None = None):
    """Trains a model on the train split; returns (model, per-epoch history, the epochs resumed at). With
    ``location``, keeps checkpoints there and, with ``train_cfg.resume``, continues the newest one."""
    model = build_for_dataset(model_cfg, dataset, steps_per_execution=train_cfg.steps_per_execution)
    history, start, resumed_at, identity = [], 0, [], None
    if location is not None:
        if train_cfg.checkpoint_every_steps:
            raise ConfigError("--checkpoint-every-steps: checkpoints within an epoch are the Ray backend's "
                              "(--backend ray); the local backend keeps them at epochs' ends")
        check_storage(location)
        identity = resume_identity(model_cfg, train_cfg, dataset)
        found = check_resume(location, identity, train_cfg.resume)
        if found is not None:
            history, start, resumed_at = _restore(model, found, location, train_cfg)
    # One pass over the files an epoch (the last batch partial), reshuffled each pass (the pass's number seeds
    # it, so a resumed run reads what the uninterrupted one would have); the steps are given, as several steps
    # per call need.
    data = parquet_dataset(dataset.files("train"), model.columns, train_cfg.batch_size, train_cfg.shuffle_buffer,
                           seed=train_cfg.seed, repeat=True, first_pass=start)
    steps = -(-dataset.counts["train"] // train_cfg.batch_size)
    epoch_log = EpochLog(dataset.counts["train"], train_cfg.epochs, batch_size=train_cfg.batch_size,
                         history=history)
    kept = [] if location is None else [
        EpochCheckpoints(model, location, train_cfg, steps, epoch_log.history,
                         lambda: {"identity": identity, "resumed_at": resumed_at})]
    log.info("training on %s examples (%d shards), batch %d, %d epochs, features: %s", f"{dataset.counts['train']:,}",
             len(dataset.files("train")), train_cfg.batch_size, train_cfg.epochs, ", ".join(model.features["used"]) or
             "ids only")
    if start < train_cfg.epochs:
        model.fit(data, epochs=train_cfg.epochs, initial_epoch=start, steps_per_epoch=steps, verbose=0,
                  callbacks=[*learning_rate_schedule(model_cfg, train_cfg.epochs), epoch_log, *kept,
                             *(callbacks or [])])
    else:
        log.info("all %d epochs were done before; nothing to train", train_cfg.epochs)
    return model, epoch_log.history, resumed_at


def _restore(model, found: tuple[str, dict], location: str,
             train_cfg: TrainConfig) -> tuple[list[dict], int, list[int]]:
    """Reads the checkpoint ``found`` (path, state) under ``location`` into ``model`` (towers and optimizer);
    returns (its history, the epochs done, the epochs resumed at)."""
    path, state = found
    if state.get("step"):
        raise ConfigError(f"--resume: checkpoint {path} was taken within epoch {state['epoch'] + 1} (step "
                          f"{state['step']}) by the Ray backend; continue it with --backend ray")
    model.optimizer.build(model.trainable_variables)  # its slots exist before the checkpoint is read into them
    if not storage.is_remote(location):
        checkpoint_of(model).read(str(Path(path) / WEIGHTS)).assert_existing_objects_matched()
    else:
        with scratch("resume") as local:
            for name in state["files"]:
                storage.download_file(storage.join(location, RUN_NAME, Path(path).name, name), local / name)
            checkpoint_of(model).read(str(local / WEIGHTS)).assert_existing_objects_matched()
    done = state["epoch"]
    log.info("resuming from the checkpoint of epoch %d/%d (%s): %s", done, train_cfg.epochs, path,
             epochs_left(done, train_cfg.epochs))
    return state["history"], done, state.get("resumed_at", []) + [done]


class EpochCheckpoints(tf.keras.callbacks.Callback):
    """After EpochLog: a checkpoint of every ``checkpoint_every``-th epoch, at least ``checkpoint_min_interval``
    seconds after the one before, and of the last; the epoch's history entry records how long it took
    (``checkpoint_stall_seconds``). Only the newest ``KEPT`` complete ones are kept."""

    def __init__(self, model, location: str, cfg: TrainConfig, steps: int, history: list[dict], record):
        super().__init__()
        self.saver, self.location, self.cfg, self.steps = checkpoint_of(model), location, cfg, steps
        self.history, self.record = history, record

    def on_train_begin(self, logs=None):
        self.last_kept = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if not epoch_due(done, self.cfg,
                         lambda: time.monotonic() - self.last_kept >= self.cfg.checkpoint_min_interval):
            return
        start = time.monotonic()
        into = storage.join(self.location, RUN_NAME, f"{PREFIX}{done:06d}")
        state = {"epoch": done, "step": 0, "partial": None, "history": self.history, "steps_per_epoch": self.steps,
                 "workers": 1, **self.record(), "backend": "local"}
        if storage.is_remote(into):  # written here, then uploaded, state.json last
            with scratch("checkpoint") as tmp:
                self.saver.write(str(tmp / WEIGHTS))
                files = {p.name: p.stat().st_size for p in tmp.iterdir()}
                write_json(tmp / STATE, {**state, "files": files})
                for name in files:
                    storage.upload_file(tmp / name, storage.join(into, name))
                storage.upload_file(tmp / STATE, storage.join(into, STATE))  # last: the checkpoint is complete
        else:  # written in place (no copy of what may be gigabytes), state.json last
            target = Path(into)
            shutil.rmtree(target, ignore_errors=True)  # this backend's, left incomplete by a crash
            try:
                self.saver.write(str(target / WEIGHTS))
                write_json(target / STATE, {**state, "files": {p.name: p.stat().st_size for p in target.iterdir()}})
            except BaseException:  # a full disk, an interrupt: not left half-written (the newer ones stay)
                shutil.rmtree(target, ignore_errors=True)
                raise
        self._prune()
        self.last_kept = time.monotonic()
        self.history[-1]["checkpoint_stall_seconds"] = round(self.last_kept - start, 3)
        log.info("checkpoint of epoch %d written to %s in %.2f s", done, into, self.last_kept - start)

    def _prune(self) -> None:
        """Removes this backend's checkpoints other than the newest ``KEPT`` complete ones (a checkpoint cut short
        by a crash before this one included)."""
        keep = {path for path, _ in complete_checkpoints(self.location)[-KEPT:]}
        fs, _ = storage.filesystem(self.location)
        for path in _local_checkpoint_dirs(self.location):
            if path not in keep:
                fs.delete_dir(path)


def remove_checkpoints(location: str) -> int:
    """Removes the local backend's checkpoints under ``location`` (those it names ``checkpoint_local-*``; nothing
    else there), once the model they insured is saved; returns how many."""
    fs, base = storage.filesystem(location)
    removed = 0
    for path in _local_checkpoint_dirs(location):
        fs.delete_dir(path)
        removed += 1
    if removed and not fs.get_file_info(pafs.FileSelector(f"{base}/{RUN_NAME}", allow_not_found=True)):
        fs.delete_dir(f"{base}/{RUN_NAME}")  # emptied: it held this backend's checkpoints alone
    return removed


def _local_checkpoint_dirs(location: str) -> list[str]:
    """The paths (as ``storage.filesystem(location)`` names them) of this backend's checkpoint directories under
    ``location``, complete or not; never a directory of Ray Train's or of anyone else."""
    fs, base = storage.filesystem(location)
    return [info.path for info in fs.get_file_info(pafs.FileSelector(f"{base}/{RUN_NAME}", allow_not_found=True))
            if info.type == pafs.FileType.Directory and info.base_name.startswith(PREFIX)]


def evaluate(model, dataset: Dataset, train_cfg: TrainConfig) -> dict[str, float]:
    """Test-split metrics under TFRS's names (``factorized_top_k/top_100_categorical_accuracy``, ...)."""
    data = parquet_dataset(dataset.files("test"), model.columns, train_cfg.eval_batch_size)
    start = time.monotonic()
    steps = -(-dataset.counts["test"] // train_cfg.eval_batch_size)  # given: a model may run several steps a call
    metrics = model.evaluate(data, steps=steps, return_dict=True, verbose=0,
                             callbacks=[EvaluationLog(dataset.counts["test"], train_cfg.eval_batch_size)])
    log.info("evaluated %s test examples in %.1f s", f"{dataset.counts['test']:,}", time.monotonic() - start)
    return {k: float(v) for k, v in metrics.items()}
