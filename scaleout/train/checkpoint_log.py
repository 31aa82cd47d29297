"""A Ray worker's per-epoch callback: EpochLog, then the run's checkpoints, within and at the end of epochs.

Imported by each worker once TensorFlow may start (scaleout.train.ray_backend._train_worker): it needs Ray
Train's worker context.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import ray.train
import ray.train.collective

from scaleout.config import TrainConfig
from scaleout.fsutil import write_json
from scaleout.train.callbacks import EpochLog
from scaleout.train.checkpoints import STATE, WEIGHTS, epoch_due

log = logging.getLogger(__name__)


class CheckpointEpochLog(EpochLog):
    """EpochLog, then a checkpoint every ``checkpoint_every`` epochs, at least ``checkpoint_min_interval``
    seconds after the one before (by rank 0's clock, for every worker), and after the last; with
    ``checkpoint_every_steps`` also within epochs, at the end of the first tf.function call at or past each
    multiple of that many steps (the same interval applies). Under the "async" upload
    (``checkpoint_upload``) the workers go on once it is written locally, while Ray Train uploads rank 0's
    copy in a thread and then removes it; an upload that fails stops the workers, and the last epoch's is
    uploaded in place, as under "sync" (the workers have nothing left to overlap it with).
    ``checkpoint_stall_seconds``: how long the workers stood still for an epoch's checkpoint (write, Ray
    Train's report, and for a checkpoint uploaded in place the upload), recorded in the epoch's history
    entry (a checkpoint's state.json holds those of the checkpoints before it); those within the epoch are
    counted in ``checkpoints_within`` and ``checkpoint_within_stall_seconds``."""

    def __init__(self, *, saver, work: Path, train_cfg: TrainConfig, steps: int, rank: int, world: int,
                 record: Callable[[], dict], history: list[dict], resumed: dict | None = None):
        super().__init__(steps * train_cfg.batch_size, train_cfg.epochs, workers=world, quiet=rank != 0,
                         history=history, batch_size=train_cfg.batch_size, resumed=resumed)
        self.saver, self.work, self.cfg, self.steps, self.rank, self.world = saver, work, train_cfg, steps, rank, world
        self.record = record  # what the run was made from and how it trains, for each checkpoint's state.json
        self.upload = ray.train.CheckpointUploadMode[train_cfg.checkpoint_upload.upper()]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.last_kept = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.marked, self.within = self.step_base, []

    def interval_passed(self) -> bool:
        """Whether ``checkpoint_min_interval`` has passed since the last checkpoint. Every worker must report
        the same checkpoints (Ray Train pairs the workers' reports in order), so rank 0's clock decides."""
        if self.cfg.checkpoint_min_interval <= 0:
            return True
        waited = time.monotonic() - self.last_kept
        return bool(ray.train.collective.broadcast_from_rank_zero(waited >= self.cfg.checkpoint_min_interval))

    def due(self, done: int) -> bool:
        """Whether epoch ``done`` is checkpointed."""
        return epoch_due(done, self.cfg, self.interval_passed)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)  # the divergence check first: a diverged model is never kept
        every = self.cfg.checkpoint_every_steps
        step = self.step_base + batch + 1
        if not every or step >= self.steps or step // every == self.marked // every:
            return
        self.marked = step
        if not self.interval_passed():
            return
        # The epochs before it, and how far into this one: its loss so far and seconds, for its entry.
        partial = {"loss_sum": self.loss_sum, "seconds": round(self.seconds_so_far(), 3)}
        self.within.append(self.keep(self._epoch - 1, step, partial, self.upload))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        done = epoch + 1
        if self.within:
            self.history[-1]["checkpoints_within"] = len(self.within)
            self.history[-1]["checkpoint_within_stall_seconds"] = round(sum(self.within), 3)
        # An epoch without a checkpoint reports nothing: Ray Train's controller takes one report per
        # health check (2 s by default), and reports of shorter epochs would queue behind each other.
        if not self.due(done):
            return
        # The last upload is waited for here, so that none is left running once the scratch directory goes.
        mode = self.upload if done < self.cfg.epochs else ray.train.CheckpointUploadMode.SYNC
        self.history[-1]["checkpoint_stall_seconds"] = round(self.keep(done, 0, None, mode), 3)

    def keep(self, done: int, step: int, partial: dict | None, mode) -> float:
        """Writes and reports the checkpoint of ``done`` epochs and ``step`` steps of the next; returns how long
        the workers stood still for it."""
        start = time.monotonic()
        tmp = tempfile.mkdtemp(prefix="checkpoint-", dir=self.work)
        handed = False  # to Ray Train's upload thread, which removes the directory after the upload
        try:
            # Every worker writes: the whole model's save (checkpoint_of's fallback) reads
            # its metric variables across the workers, so all must take part; the towers'
            # alone would not need it. Only rank 0's copy is handed to Ray Train.
            self.saver.write(os.path.join(tmp, WEIGHTS))
            if not step:
                self.history[-1]["checkpoint_write_seconds"] = round(time.monotonic() - start, 3)
            files = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
            write_json(Path(tmp) / STATE, {"epoch": done, "step": step, "partial": partial,
                                           "history": self.history, "steps_per_epoch": self.steps,
                                           "workers": self.world, "files": files, **self.record(),
                                           "checkpoint_upload": self.cfg.checkpoint_upload})
            report = ray.train.Checkpoint.from_directory(tmp) if self.rank == 0 else None
            loss = self.loss_sum / (step * self.cfg.batch_size) if step else self.history[-1]["loss_per_example"]
            ray.train.report({"epoch": done, "step": step, "loss": loss}, checkpoint=report,
                             checkpoint_upload_mode=mode)
            handed = report is not None and mode == ray.train.CheckpointUploadMode.ASYNC
        finally:
            if not handed:
                shutil.rmtree(tmp, ignore_errors=True)
        self.last_kept = time.monotonic()
        stall = self.last_kept - start
        if self.rank == 0:
            log.info("checkpoint of %s written %s in %.2f s",
                     f"step {step}/{self.steps} of epoch {done + 1}" if step else f"epoch {done}",
                     "and its upload started" if handed else "and stored", stall)
        return stall
