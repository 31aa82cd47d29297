"""The local backend: fitting the two-tower model in this process, and evaluating it on the test split."""

from __future__ import annotations

import logging
import time

from scaleout.config import ModelConfig, TrainConfig
from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import parquet_dataset
from scaleout.train.callbacks import EpochLog, EvaluationLog
from scaleout.train.model import build_for_dataset

log = logging.getLogger(__name__)


def fit(dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks: list | None = None):
    """Trains a fresh model on the train split; returns (model, per-epoch history)."""
    model = build_for_dataset(model_cfg, dataset, steps_per_execution=train_cfg.steps_per_execution)
    # One pass over the files an epoch (the last batch partial), reshuffled each pass; the steps are given,
    # as several steps per call need.
    data = parquet_dataset(dataset.files("train"), model.columns, train_cfg.batch_size, train_cfg.shuffle_buffer,
                           seed=train_cfg.seed, repeat=True)
    steps = -(-dataset.counts["train"] // train_cfg.batch_size)
    epoch_log = EpochLog(dataset.counts["train"], train_cfg.epochs, batch_size=train_cfg.batch_size)
    log.info("training on %s examples (%d shards), batch %d, %d epochs, features: %s", f"{dataset.counts['train']:,}",
             len(dataset.files("train")), train_cfg.batch_size, train_cfg.epochs, ", ".join(model.features["used"]) or
             "ids only")
    model.fit(data, epochs=train_cfg.epochs, steps_per_epoch=steps, verbose=0,
              callbacks=[epoch_log, *(callbacks or [])])
    return model, epoch_log.history


def evaluate(model, dataset: Dataset, train_cfg: TrainConfig) -> dict[str, float]:
    """Test-split metrics under TFRS's names (``factorized_top_k/top_100_categorical_accuracy``, ...)."""
    data = parquet_dataset(dataset.files("test"), model.columns, train_cfg.eval_batch_size)
    start = time.monotonic()
    steps = -(-dataset.counts["test"] // train_cfg.eval_batch_size)  # given: a model may run several steps a call
    metrics = model.evaluate(data, steps=steps, return_dict=True, verbose=0,
                             callbacks=[EvaluationLog(dataset.counts["test"], train_cfg.eval_batch_size)])
    log.info("evaluated %s test examples in %.1f s", f"{dataset.counts['test']:,}", time.monotonic() - start)
    return {k: float(v) for k, v in metrics.items()}
