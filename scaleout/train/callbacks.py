"""The per-epoch callbacks of both training backends: loss per example, time, throughput, history; the learning
rate's schedule."""

from __future__ import annotations

import logging
import math
import time

from scaleout.config import ModelConfig
from scaleout.errors import TrainingDiverged
from scaleout.stages import Progress
from scaleout.tfenv import tf

log = logging.getLogger(__name__)


class EvaluationLog(tf.keras.callbacks.Callback):
    """Logs how many test examples ``model.evaluate`` has done (scaleout.stages.Progress)."""

    def __init__(self, examples: int, batch_size: int):
        super().__init__()
        self.examples, self.batch_size = examples, batch_size

    def on_test_begin(self, logs=None):
        self._progress = Progress(log, "evaluate", self.examples, "test examples")

    def on_test_batch_end(self, batch, logs=None):
        self._progress((batch + 1) * self.batch_size)


class EpochLog(tf.keras.callbacks.Callback):
    """Logs each epoch's loss, time and throughput and keeps them (``history``) for train.json.

    The loss is the sum of every step's loss (the global batch's, summed over
    replicas by the model's train_step, which keeps the running sum as
    ``loss_sum``) over the epoch's examples: comparable across batch sizes and
    backends, unlike Keras's last-step ``loss``. ``workers`` only words the
    log line; ``quiet`` keeps a worker other than rank 0 from logging.
    ``history`` may hold the entries of epochs done before a resume; ``resumed``
    ({"epoch", "step", "loss_sum", "seconds"}) says that epoch's first ``step``
    steps were trained before it, with that loss sum in that many seconds: its
    entry counts them (``resumed_at_step``).
    A step whose loss is NaN or infinite stops training (TrainingDiverged) at
    the end of its tf.function call, so a diverged model is never saved.
    """

    def __init__(self, examples_per_epoch: int, epochs: int, *, workers: int = 1,
                 quiet: bool = False, history: list[dict] | None = None, batch_size: int = 0,
                 resumed: dict | None = None):
        super().__init__()
        self.resumed = resumed
        self.batch_size = batch_size  # global; given, long epochs log their progress (scaleout.stages.Progress)
        self.examples = examples_per_epoch
        self.epochs = epochs
        self.workers = workers
        self.quiet = quiet
        self.history: list[dict] = history if history is not None else []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        before = self.resumed if self.resumed and self.resumed["epoch"] == self._epoch else {}
        self.step_base, self.loss_base = before.get("step", 0), before.get("loss_sum", 0.0)
        self.seconds_base = before.get("seconds", 0.0)
        self.loss_sum = self.loss_base
        self._start = time.monotonic()
        self._progress = Progress(log, f"epoch {self._epoch}/{self.epochs}", self.examples, "examples", "examples/s")

    def seconds_so_far(self) -> float:
        """The epoch's seconds of training, those before a resume within it included."""
        return self.seconds_base + time.monotonic() - self._start

    def on_train_batch_end(self, batch, logs=None):
        # The model's running sum of the epoch's step losses: with several steps per call
        # (steps_per_execution) this runs every Nth step, and a NaN or infinite loss of any
        # step in between leaves the sum NaN or infinite too.
        loss_sum = float((logs or {}).get("loss_sum", 0.0))
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(f"training diverged: the loss was {float(logs.get('loss', loss_sum))} by step "
                                   f"{batch + 1} of epoch {self._epoch}; no model was saved. Try a lower "
                                   "--learning-rate")
        self.loss_sum = self.loss_base + loss_sum
        if self.batch_size and not self.quiet:
            self._progress((self.step_base + batch + 1) * self.batch_size)

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.seconds_so_far()
        entry = {"epoch": epoch + 1, "seconds": round(seconds, 3),
                 "ended_at": round(time.time(), 3),  # Unix time (this process's clock): when, beside other records
                 "examples_per_second": round(self.examples / seconds, 1),
                 "loss_per_example": round(self.loss_sum / self.examples, 6),
                 "learning_rate": float(self.model.optimizer.learning_rate.numpy())}  # the epoch's, scheduled or not
        # The last step's logged values (FactorizedTopK's only with training metrics on); the running sum is above,
        # and the rate (which Keras' LearningRateScheduler logs as "lr").
        entry.update({k: float(v) for k, v in (logs or {}).items() if k not in ("loss_sum", "lr")})
        if self.step_base:
            entry["resumed_at_step"] = self.step_base
        self.history.append(entry)
        if not self.quiet:
            log.info("epoch %d/%d: loss %.4f per example, %.1f s, %s examples/s%s", epoch + 1, self.epochs,
                     entry["loss_per_example"], seconds, f"{entry['examples_per_second']:,.0f}",
                     f" over {self.workers} workers" if self.workers > 1 else "")


def learning_rate_schedule(cfg: ModelConfig, epochs: int) -> list[tf.keras.callbacks.Callback]:
    """The callbacks that set each epoch's learning rate (``ModelConfig.learning_rate_schedule``) out of ``epochs``:
    none for a constant rate. Keras' ``LearningRateScheduler`` sets it from the epoch's number as the epoch begins,
    which a resumed fit (``initial_epoch``) and each Ray worker share."""
    if cfg.learning_rate_schedule == "constant":
        return []

    def cosine(epoch: int, _rate: float) -> float:
        return cfg.learning_rate * (1.0 + math.cos(math.pi * (epoch + 0.5) / epochs)) / 2.0
    return [tf.keras.callbacks.LearningRateScheduler(cosine)]
