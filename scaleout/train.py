"""Fitting the two-tower model on a prepared dataset, evaluating it, saving the towers."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from scaleout import __version__
from scaleout.config import ModelConfig, TrainConfig, from_dict
from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import parquet_dataset
from scaleout.errors import ArtifactError
from scaleout.fsutil import atomic_dir, write_json
from scaleout.rundir import RunDir
from scaleout.model import CANDIDATE_FEATURE, QUERY_FEATURE, build_for_dataset, candidate_counts, from_towers, tf

log = logging.getLogger(__name__)
MODEL_JSON = "model.json"


class EpochLoss(tf.keras.callbacks.Callback):
    """Sums the loss of every step (the global batch's, summed over replicas by Keras) for the epoch's mean per
    example: comparable across batch sizes and backends, unlike Keras's last-step ``loss``."""

    def on_epoch_begin(self, epoch, logs=None):
        self.loss_sum = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.loss_sum += float((logs or {}).get("loss", 0.0))


class EpochLog(EpochLoss):
    """Logs each epoch's loss, time and throughput; keeps them for train.json."""

    def __init__(self, examples_per_epoch: int, epochs: int, with_metrics: bool):
        super().__init__()
        self.examples = examples_per_epoch
        self.epochs = epochs
        self.with_metrics = with_metrics
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._start
        entry = {"epoch": epoch + 1, "seconds": round(seconds, 3),
                 "examples_per_second": round(self.examples / seconds, 1),
                 "loss_per_example": round(self.loss_sum / self.examples, 6)}
        # Keras logs the metric variables even when compute_metrics was off; they hold nothing then.
        entry.update({k: float(v) for k, v in (logs or {}).items()
                      if self.with_metrics or not k.startswith("factorized_top_k/")})
        self.history.append(entry)
        log.info("epoch %d/%d: loss %.4f per example, %.1f s, %s examples/s", epoch + 1, self.epochs,
                 entry["loss_per_example"], seconds, f"{entry['examples_per_second']:,.0f}")


def fit(dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, callbacks: list | None = None):
    """Trains a fresh model on the train split; returns (model, per-epoch history)."""
    model = build_for_dataset(model_cfg, dataset)
    data = parquet_dataset(dataset.files("train"), model.columns, train_cfg.batch_size, train_cfg.shuffle_buffer,
                           seed=train_cfg.seed)
    epoch_log = EpochLog(dataset.counts["train"], train_cfg.epochs, model_cfg.train_metrics)
    log.info("training on %s examples (%d shards), batch %d, %d epochs, features: %s", f"{dataset.counts['train']:,}",
             len(dataset.files("train")), train_cfg.batch_size, train_cfg.epochs, ", ".join(model.features["used"]) or
             "ids only")
    model.fit(data, epochs=train_cfg.epochs, verbose=0, callbacks=[epoch_log, *(callbacks or [])])
    return model, epoch_log.history


def evaluate(model, dataset: Dataset, train_cfg: TrainConfig) -> dict[str, float]:
    """Test-split metrics under TFRS's names (``factorized_top_k/top_100_categorical_accuracy``, ...)."""
    data = parquet_dataset(dataset.files("test"), model.columns, train_cfg.eval_batch_size)
    start = time.monotonic()
    metrics = model.evaluate(data, return_dict=True, verbose=0)
    log.info("evaluated %s test examples in %.1f s", f"{dataset.counts['test']:,}", time.monotonic() - start)
    return {k: float(v) for k, v in metrics.items()}


def save_model(model, model_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> None:
    """Writes the two towers and model.json into ``model_dir``, atomically."""
    with atomic_dir(model_dir) as tmp:
        model.query_tower.save(tmp / "query_tower")
        model.candidate_tower.save(tmp / "candidate_tower")
        write_json(tmp / MODEL_JSON, {
            "scaleout_version": __version__,
            "model": dataclasses.asdict(model_cfg),
            "train": dataclasses.asdict(train_cfg),
            "dataset": str(dataset.path.resolve()),
            "dataset_created": dataset.manifest["created"],
            "features": model.features,
            "vocab_sizes": {QUERY_FEATURE: len(dataset.vocabulary(QUERY_FEATURE)),
                            CANDIDATE_FEATURE: len(dataset.vocabulary(CANDIDATE_FEATURE))},
        })


@dataclasses.dataclass(frozen=True)
class Towers:
    """Trained towers loaded from a model directory."""

    query: object
    candidate: object
    model_cfg: ModelConfig
    info: dict

    @classmethod
    def load(cls, model_dir: str | Path) -> "Towers":
        model_dir = Path(model_dir)
        meta = model_dir / MODEL_JSON
        if not meta.is_file():
            raise ArtifactError(f"{model_dir}: no trained model here (no {MODEL_JSON}); run `scaleout train` first")
        info = json.loads(meta.read_text())
        towers = []
        for name in ("query_tower", "candidate_tower"):
            try:
                towers.append(tf.keras.models.load_model(model_dir / name, compile=False))
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{model_dir / name}: cannot load the saved tower ({exc})") from exc
        return cls(towers[0], towers[1], from_dict(ModelConfig, info["model"]), info)

    def as_model(self, dataset: Dataset):
        return from_towers(self.model_cfg, self.query, self.candidate, dataset.vocabulary(CANDIDATE_FEATURE),
                           candidate_counts(dataset))


def train_run(run: RunDir, model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, float]:
    """Fits on RUN/data, saves RUN/model, writes RUN/metrics/{train,eval}.json; returns the test metrics.

    With ``train_cfg.backend == "ray"`` the caller has connected to a Ray
    cluster (see scaleout.ray_train.fit_ray).
    """
    dataset = Dataset(run.data)
    start = time.monotonic()
    resumed_at: list[int] = []
    if train_cfg.backend == "ray":
        from scaleout.ray_train import fit_ray

        model, history, resumed_at = fit_ray(run, model_cfg, train_cfg)
    else:
        model, history = fit(dataset, model_cfg, train_cfg)
    fit_seconds = time.monotonic() - start
    save_model(model, run.model, model_cfg, train_cfg, dataset)
    write_json(run.train_metrics, {"epochs": history, "fit_seconds": round(fit_seconds, 3),
                                   "resumed_at_epochs": resumed_at, "backend": train_cfg.backend,
                                   "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg)})
    metrics = evaluate(model, dataset, train_cfg)
    _write_eval(run, dataset, metrics)
    return metrics


def evaluate_run(run: RunDir, train_cfg: TrainConfig) -> dict[str, float]:
    """Evaluates the saved towers of RUN/model on the test split; rewrites RUN/metrics/eval.json."""
    dataset = Dataset(run.data)
    towers = Towers.load(run.model)
    metrics = evaluate(towers.as_model(dataset), dataset, train_cfg)
    _write_eval(run, dataset, metrics)
    return metrics


def _write_eval(run: RunDir, dataset: Dataset, metrics: dict[str, float]) -> None:
    write_json(run.eval_metrics, {"metrics": metrics, "split": "test", "examples": dataset.counts["test"],
                                  "candidates": dataset.counts["candidates"], "model": str(run.model)})
    shown = {k.split("/")[-1]: round(v, 4) for k, v in metrics.items() if k.startswith("factorized_top_k/")}
    log.info("test metrics: %s (written to %s)", shown, run.eval_metrics)
