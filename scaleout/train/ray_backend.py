"""Ray Train backend: the two-tower model on N workers under MultiWorkerMirroredStrategy.

The driver (``fit_ray``) checks everything it can before any worker starts,
then runs ``train_func`` on each worker through ``TensorflowTrainer``. Every
worker reads only its own train shards (shard i goes to worker i mod N) and
takes ``batch_size / N`` rows a step; the model gathers the candidates' rows
across workers so each step trains the single-process objective over the
global batch, in two collectives a step (see ``scaleout.train.replicas``).

Each epoch (``checkpoint_every``, at most one every ``checkpoint_min_interval``
seconds, and the last), and within epochs every ``checkpoint_every_steps``
steps, the workers write a checkpoint (weights, optimizer slots, the epochs
and steps done and their history) that Ray Train persists to
the storage path, by default in a thread while the next epoch trains
(``checkpoint_upload``); when a worker dies Ray Train restarts the group and
``train_func`` continues from the latest one, each worker's input where it
left it (``stream_position``). The driver finally rebuilds the
model from the last checkpoint in one process, saves the towers and evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scaleout.config import ModelConfig, TrainConfig, from_dict
from scaleout.data.dataset import MANIFEST, Dataset
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError, TrainingDiverged
from scaleout.fsutil import sha256, write_json
from scaleout import storage
from scaleout.rundir import RunDir
from scaleout.scratch import scratch
from scaleout.storage import forwarded_env
from scaleout.tfenv import RUNTIME_ENV_VARS
from scaleout.train.cpus import pin_ray_worker
from scaleout.train.features import build_tables

log = logging.getLogger(__name__)
RUN_NAME = "train"
STATE = "state.json"
WEIGHTS = "weights"
DIVERGED = "diverged.txt"  # written by rank 0 when the loss became NaN or infinite
PROFILE = "profile"  # each worker's trace of the profiled epoch, under worker-R (scaleout.train.profile)


# -- shared by driver and workers ------------------------------------------------

def assign_files(files: list[Path], workers: int) -> list[list[Path]]:
    """Worker i reads shards i, i + N, i + 2N, ..."""
    if len(files) < workers:
        raise ConfigError(f"{workers} workers but only {len(files)} train shards; every worker needs one. "
                          f"Prepare with --train-shards {workers} or more")
    return [files[i::workers] for i in range(workers)]


def batches_per_pass(files: list[Path], local_batch: int) -> int:
    """The full batches of ``local_batch`` rows one pass over ``files`` gives (the input drops the remainder)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files) // local_batch


def steps_per_epoch(assignment: list[list[Path]], local_batch: int) -> int:
    """Steps every worker can take each epoch: all must take the same number (collectives)."""
    rows = [sum(pq.ParquetFile(f).metadata.num_rows for f in files) for files in assignment]
    steps = min(rows) // local_batch
    if steps == 0:
        raise ConfigError(f"a worker holds {min(rows)} train rows, fewer than its batch of {local_batch}; "
                          "use fewer workers or a smaller --batch-size")
    return steps


def resume_identity(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> dict:
    """What a checkpoint must match to be continued, flat and as JSON gives it back."""
    identity = {f"model.{k}": v for k, v in dataclasses.asdict(model_cfg).items()}
    identity.update({f"train.{k}": getattr(train_cfg, k) for k in ("batch_size", "shuffle_buffer", "seed")})
    identity["dataset manifest sha256"] = sha256(dataset.path / MANIFEST)
    return json.loads(json.dumps(identity))


def worker_dataset(location: str, rank: int, world: int, scratch: Path) -> Dataset:
    """The dataset as worker ``rank`` of ``world`` sees it: the driver's directory when it is local, else fetched
    from the store into ``scratch``, with this worker's train shards only (every file checked on the way)."""
    if not storage.is_remote(location):
        return Dataset(location)
    record = storage.read_commit(location)
    if record is None:
        raise ArtifactError(f"{location}: no committed dataset (no {storage.COMMIT})")
    manifest = json.loads(storage.read_bytes(storage.join(storage.generation_uri(location, record), MANIFEST)))
    train = manifest["shards"]["train"]
    others = {name for shards in manifest["shards"].values() for name in shards} - set(train[rank::world])
    storage.fetch_dir(location, scratch / "data", record, only=lambda name: name not in others)
    log.info("fetched the dataset from %s: manifest, vocabularies and train shards %s", location,
             train[rank::world])
    return Dataset(scratch / "data", verify=False, partial=True)  # fetch_dir checked every file


def stream_position(state: dict, steps: int, per_pass: int, world: int) -> tuple[int, int]:
    """(pass, batches into it) where this worker's input resumes after the checkpoint ``state``.

    A worker's input is one endless stream of passes over its shards, each of ``per_pass`` batches, of which
    every epoch takes ``steps`` (the fewest any worker has: a worker with more rows crosses into its next pass
    within an epoch). Resumed by the same number of workers, it continues where the checkpoint left it: the
    resumed run trains on what the uninterrupted one would have. By another number the shards are dealt
    otherwise and no position is the same; it starts the pass of the checkpoint's epoch, that many batches in
    for a checkpoint within an epoch (as every resume did before positions were kept)."""
    done = state["epoch"]
    step = min(state.get("step", 0), steps - 1)
    if state.get("workers") != world:
        return done, min(step, per_pass - 1)
    consumed = done * state["steps_per_epoch"] + state.get("step", 0)
    return divmod(consumed, per_pass)


def checkpoint_of(model):
    """What a worker's checkpoint holds: the towers' variables and the optimizer's state, under the names a
    checkpoint of the whole model gives them (``model/query_tower/...``, ``optimizer/...``; a table both towers
    hold may be named by either path), so that either reads the other's. Not the metrics' variables, which
    every epoch starts again: under MultiWorkerMirroredStrategy a metric's variable is read for a save as the
    sum over the workers, one eager collective each, 30 a write at the default preset. The whole model where a
    trainable variable lies outside the towers. (``benchmarks/checkpoint_upload.py`` times both writes.)"""
    from scaleout.tfenv import tf

    held = {id(v) for tower in (model.query_tower, model.candidate_tower) for v in tower.variables}
    outside = [v.name for v in model.trainable_variables if id(v) not in held]
    if outside:
        log.warning("checkpoints hold the whole model: %s lie outside the towers", outside)
        return tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    towers = tf.train.Checkpoint(query_tower=model.query_tower, candidate_tower=model.candidate_tower)
    return tf.train.Checkpoint(model=towers, optimizer=model.optimizer)


# -- the per-worker function --------------------------------------------------------

def train_func(config: dict) -> None:
    """Runs on every Ray Train worker. ``config``: dataclass dicts and the dataset path. What the worker writes
    locally (its fetched shards, checkpoints before upload, its trace) lies in one scratch directory, removed at
    the end, or by a later worker on the same node if Ray kills this one first (``scaleout.scratch``)."""
    with scratch("worker") as work:
        _train_worker(config, work)


def _train_worker(config: dict, work: Path) -> None:
    import scaleout  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow, should the runtime env lack it)
    import ray.train
    import ray.train.collective

    model_cfg = from_dict(ModelConfig, config["model"])
    train_cfg = from_dict(TrainConfig, config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker {rank}: %(message)s", datefmt="%H:%M:%S",
                        force=True)
    logging.getLogger("scaleout").setLevel(logging.INFO)

    pinning = "not pinned: pin_cpus is off"
    if train_cfg.pin_cpus:  # before TensorFlow starts its threads, which then inherit it
        pinning = pin_ray_worker(context.get_local_rank(), context.get_local_world_size(), train_cfg.cpus_per_worker)
    log.info("%s", pinning)
    from scaleout.tfenv import tf

    tf.config.threading.set_intra_op_parallelism_threads(train_cfg.cpus_per_worker)
    tf.config.threading.set_inter_op_parallelism_threads(train_cfg.cpus_per_worker)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    from scaleout.data.tfdata import parquet_dataset
    from scaleout.train.callbacks import EpochLog
    from scaleout.train.model import build_for_dataset
    from scaleout.train.profile import EpochProfile, upload as upload_trace
    from scaleout.train.towers import CANDIDATE_FEATURE

    local_batch = train_cfg.batch_size // world
    dataset = worker_dataset(config["dataset"], rank, world, work)
    assignment = assign_files(dataset.files("train"), world)
    steps = config["steps"]
    # The driver's tables, built from the whole train split: this worker may hold only its own shards.
    tables = ray.get(config["tables"])
    with strategy.scope():
        model = build_for_dataset(model_cfg, dataset, tables, train_cfg.steps_per_execution)
        model.optimizer.build(model.trainable_variables)
    saver = checkpoint_of(model)

    start_epoch, start_step, partial, history, resumed_at = 0, 0, None, [], []
    # The newest complete checkpoint in storage, rather than only ray.train.get_checkpoint():
    # a worker that dies right after its checkpoint is uploaded, before the controller has
    # registered it, would otherwise send the restarted group back to an older one.
    found = find_latest_checkpoint(config["storage"])
    if found is not None:
        path, state = found
        if state["identity"] != config["identity"]:
            raise ArtifactError(f"checkpoint {path} was trained with other settings")
        fs, _ = storage.filesystem(config["storage"])
        with ray.train.Checkpoint(path, filesystem=fs).as_directory() as d:
            saver.read(os.path.join(d, WEIGHTS)).assert_existing_objects_matched()
        start_epoch, history = state["epoch"], state["history"]
        start_step = min(state.get("step", 0), steps - 1)
        partial = {**state["partial"], "step": start_step} if start_step else None
        resumed_at = state["resumed_at"] + [start_epoch]
        if start_step:
            log.info("resuming from the checkpoint at step %d of %d of epoch %d/%d: the rest of it and epochs "
                     "%d-%d remain", start_step, steps, start_epoch + 1, train_cfg.epochs, start_epoch + 2,
                     train_cfg.epochs)
        else:
            log.info("resuming from the checkpoint of epoch %d/%d: epochs %d-%d remain", start_epoch,
                     train_cfg.epochs, start_epoch + 1, train_cfg.epochs)
    per_pass = batches_per_pass(assignment[rank], local_batch)

    def dataset_fn(position: tuple[int, int]):
        def make(input_context):
            files = assignment[input_context.input_pipeline_id]
            # With several workers each batch comes with the next one's candidate ids, whose rows a step sends
            # ahead in its one collective (TwoTowerModel.train_step).
            ahead = (CANDIDATE_FEATURE,) if world > 1 and model.exchanges_rows else ()
            data = parquet_dataset(files, model.columns,
                                   input_context.get_per_replica_batch_size(train_cfg.batch_size),
                                   train_cfg.shuffle_buffer,
                                   seed=train_cfg.seed * 1_000 + input_context.input_pipeline_id,
                                   drop_remainder=True, repeat=True, first_pass=position[0],
                                   skip_batches=position[1], lookahead=ahead)
            options = tf.data.Options()
            # Each worker already reads only its own shards.
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return data.with_options(options)
        return tf.keras.utils.experimental.DatasetCreator(make)

    upload = ray.train.CheckpointUploadMode[train_cfg.checkpoint_upload.upper()]

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

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.last_kept = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self.marked, self.within = self.step_base, []

        def interval_passed(self) -> bool:
            """Whether ``checkpoint_min_interval`` has passed since the last checkpoint. Every worker must report
            the same checkpoints (Ray Train pairs the workers' reports in order), so rank 0's clock decides."""
            if train_cfg.checkpoint_min_interval <= 0:
                return True
            waited = time.monotonic() - self.last_kept
            return bool(ray.train.collective.broadcast_from_rank_zero(waited >= train_cfg.checkpoint_min_interval))

        def due(self, done: int) -> bool:
            """Whether epoch ``done`` is checkpointed."""
            if done == train_cfg.epochs:
                return True
            return not done % train_cfg.checkpoint_every and self.interval_passed()

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)  # the divergence check first: a diverged model is never kept
            every = train_cfg.checkpoint_every_steps
            step = self.step_base + batch + 1
            if not every or step >= steps or step // every == self.marked // every:
                return
            self.marked = step
            if not self.interval_passed():
                return
            # The epochs before it, and how far into this one: its loss so far and seconds, for its entry.
            partial = {"loss_sum": self.loss_sum, "seconds": round(self.seconds_so_far(), 3)}
            self.within.append(self.keep(self._epoch - 1, step, partial, upload))

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
            mode = upload if done < train_cfg.epochs else ray.train.CheckpointUploadMode.SYNC
            self.history[-1]["checkpoint_stall_seconds"] = round(self.keep(done, 0, None, mode), 3)

        def keep(self, done: int, step: int, partial: dict | None, mode) -> float:
            """Writes and reports the checkpoint of ``done`` epochs and ``step`` steps of the next; returns how long
            the workers stood still for it."""
            start = time.monotonic()
            tmp = tempfile.mkdtemp(prefix="checkpoint-", dir=work)
            handed = False  # to Ray Train's upload thread, which removes the directory after the upload
            try:
                # Every worker writes: the whole model's save (checkpoint_of's fallback) reads
                # its metric variables across the workers, so all must take part; the towers'
                # alone would not need it. Only rank 0's copy is handed to Ray Train.
                saver.write(os.path.join(tmp, WEIGHTS))
                if not step:
                    self.history[-1]["checkpoint_write_seconds"] = round(time.monotonic() - start, 3)
                files = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
                write_json(Path(tmp) / STATE, {"epoch": done, "step": step, "partial": partial,
                                               "history": self.history, "resumed_at": resumed_at,
                                               "identity": config["identity"], "steps_per_epoch": steps,
                                               "workers": world, "files": files,
                                               "collectives_per_step": model.step_collectives,
                                               "cpu_allocator": model.trained_allocator,
                                               "cpu_pinning": pinning,
                                               "checkpoint_upload": train_cfg.checkpoint_upload})
                report = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
                loss = self.loss_sum / (step * train_cfg.batch_size) if step else self.history[-1]["loss_per_example"]
                ray.train.report({"epoch": done, "step": step, "loss": loss}, checkpoint=report,
                                 checkpoint_upload_mode=mode)
                handed = report is not None and mode == ray.train.CheckpointUploadMode.ASYNC
            finally:
                if not handed:
                    shutil.rmtree(tmp, ignore_errors=True)
            self.last_kept = time.monotonic()
            stall = self.last_kept - start
            if rank == 0:
                log.info("checkpoint of %s written %s in %.2f s",
                         f"step {step}/{steps} of epoch {done + 1}" if step else f"epoch {done}",
                         "and its upload started" if handed else "and stored", stall)
            return stall
    if start_epoch >= train_cfg.epochs:
        log.info("all %d epochs were done before; nothing to train", train_cfg.epochs)
        return
    log.info("%d workers, %d steps of %d rows per worker per epoch, shards %s", world, steps, local_batch,
             [f.name for f in assignment[rank]])
    # Before the checkpoint's callback, so the trace ends with the epoch's steps; uploaded to the storage, read by
    # the driver (which may be on another node).
    into = storage.join(profile_location(config["storage"]), f"worker-{rank}")
    tracer = ([EpochProfile(train_cfg.profile_epoch, Path(tempfile.mkdtemp(prefix="profile-", dir=work)), rank,
                            then=lambda traced: upload_trace(traced, into))] if train_cfg.profile_epoch else [])
    epoch_log = CheckpointEpochLog(steps * train_cfg.batch_size, train_cfg.epochs, workers=world, quiet=rank != 0,
                                   history=history, batch_size=train_cfg.batch_size,
                                   resumed={**partial, "epoch": start_epoch + 1} if partial else None)
    position = stream_position(found[1], steps, per_pass, world) if found is not None else (0, 0)
    try:
        if start_step:  # the rest of the epoch the checkpoint was taken in, as a fit of its own
            model.fit(dataset_fn(position), epochs=start_epoch + 1, initial_epoch=start_epoch,
                      steps_per_epoch=steps - start_step, verbose=0, callbacks=[*tracer, epoch_log])
            position = divmod(position[0] * per_pass + position[1] + steps - start_step, per_pass)
            start_epoch += 1
        if start_epoch < train_cfg.epochs:
            model.fit(dataset_fn(position), epochs=train_cfg.epochs, initial_epoch=start_epoch,
                      steps_per_epoch=steps, verbose=0, callbacks=[*tracer, epoch_log])
    except TrainingDiverged as exc:
        # Every worker sees the same global loss and stops at the same step. Ending normally, rather than
        # raising, keeps Ray Train from restarting the group from the last checkpoint into the same
        # divergence; the driver reads why from storage.
        if rank == 0:
            fs, base = storage.filesystem(config["storage"])
            with fs.open_output_stream(f"{base}/{RUN_NAME}/{DIVERGED}") as f:
                f.write(str(exc).encode())


# -- the driver ---------------------------------------------------------------------

def storage_location(run: RunDir, train_cfg: TrainConfig) -> str:
    return train_cfg.storage or run.checkpoints


def profile_location(location: str) -> str:
    """Where the workers upload their traces of the profiled epoch (worker-R under it), under the checkpoints'
    ``location``."""
    return storage.join(location, RUN_NAME, PROFILE)


def check_storage(location: str) -> None:
    """ScaleoutError unless ``location`` can be created and written."""
    if storage.is_remote(location):
        storage.preflight(location)
        return
    fs, base = storage.filesystem(location)
    marker = f"{base}/.scaleout-write-check"
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(marker) as f:
            f.write(b"ok")
        fs.delete_file(marker)
    except OSError as exc:
        raise ScaleoutError(f"checkpoint storage {location} is not writable: {exc}") from exc


def find_latest_checkpoint(location: str) -> tuple[str, dict] | None:
    """(path, state) of the newest complete checkpoint of the run under ``location``, or None.

    A checkpoint is complete when every file its state.json lists is there with
    its size: an upload cut short by a dying worker is passed over.
    """
    fs, base = storage.filesystem(location)
    best = None
    for info in fs.get_file_info(pafs.FileSelector(f"{base}/{RUN_NAME}", allow_not_found=True)):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint"):
            continue
        if fs.get_file_info(f"{info.path}/{STATE}").type != pafs.FileType.File:
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{STATE}") as f:
                state = json.loads(f.read())
            if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) \
                    or not isinstance(state.get("step", 0), int) or not isinstance(state.get("files", {}), dict):
                raise ValueError("it names no epoch or no files")
        except (OSError, ValueError) as exc:  # a truncated upload, a partly written file
            log.warning("skipping the damaged checkpoint %s (%s: %s)", info.path, STATE, exc)
            continue
        sizes = {i.base_name: i.size for i in fs.get_file_info(pafs.FileSelector(info.path))}
        if all(sizes.get(name) == size for name, size in state.get("files", {}).items()):
            if best is None or progress(state) > progress(best[1]):
                best = (info.path, state)
    return best


def progress(state: dict) -> tuple[int, int]:
    """How far the checkpoint ``state`` had trained: (epochs done, steps into the next)."""
    return state["epoch"], state.get("step", 0)


def latest_checkpoint_state(location: str) -> dict | None:
    """state.json of the newest complete checkpoint under ``location``, or None."""
    found = find_latest_checkpoint(location)
    return None if found is None else found[1]


def preflight(run: RunDir, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
              cluster_cpus: float) -> str:
    """Every check that can fail before training; returns the checkpoint location."""
    needed = train_cfg.workers * train_cfg.cpus_per_worker
    if needed > cluster_cpus:
        raise ConfigError(f"{train_cfg.workers} workers x {train_cfg.cpus_per_worker} CPU need {needed} CPUs; "
                          f"the Ray cluster has {cluster_cpus:g}")
    steps_per_epoch(assign_files(dataset.files("train"), train_cfg.workers), train_cfg.batch_size // train_cfg.workers)
    location = storage_location(run, train_cfg)
    check_storage(location)
    state = latest_checkpoint_state(location)
    if state is None and train_cfg.resume:
        raise ArtifactError(f"--resume: no checkpoint to resume from under {location}/{RUN_NAME}")
    if state is not None and not train_cfg.resume:
        at = f", step {state['step']} of epoch {state['epoch'] + 1}" if state.get("step") else ""
        raise ArtifactError(f"{location}/{RUN_NAME} holds checkpoints of an earlier run (epoch {state['epoch']}{at}); "
                            "pass --resume to continue it, or remove that directory to start over")
    if state is not None:
        expected = resume_identity(model_cfg, train_cfg, dataset)
        differ = sorted(k for k in expected if state["identity"].get(k) != expected[k])
        if differ:
            detail = "; ".join(f"{k}: checkpoint {state['identity'].get(k)!r}, now {expected[k]!r}" for k in differ)
            raise ConfigError(f"--resume: the checkpoint under {location}/{RUN_NAME} was trained with other settings "
                              f"({detail})")
    return location


def fit_ray(run: RunDir, model_cfg: ModelConfig, train_cfg: TrainConfig):
    """Trains on the connected Ray cluster; returns (model, history, resumed_at) as one process holds it.

    The caller has connected to the cluster (``ray.init``), with
    ``scaleout.tfenv.RUNTIME_ENV_VARS`` in the job's runtime environment.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    dataset = Dataset(run.data)
    location = preflight(run, dataset, model_cfg, train_cfg, ray.cluster_resources().get("CPU", 0))
    run.sync()  # a remote run's dataset, committed before the workers fetch it
    steps = steps_per_epoch(assign_files(dataset.files("train"), train_cfg.workers),
                            train_cfg.batch_size // train_cfg.workers)
    # Side-feature codes, timestamp buckets and user histories come from the whole train split, built here once:
    # a worker that fetches only its own shards from a store would otherwise build tables of its own.
    tables = build_tables(dataset, model_cfg.features, model_cfg.history)
    fs, storage_path = storage.filesystem(location)
    trainer = TensorflowTrainer(
        train_func,
        train_loop_config={"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
                           # workers on other nodes read the store, never the driver's disk
                           "dataset": run.remote_uri("data") or str(dataset.path.resolve()), "steps": steps,
                           "storage": location, "identity": resume_identity(model_cfg, train_cfg, dataset),
                           "tables": ray.put(tables)},
        # SPREAD: one worker per node where the cluster allows (each node's cores and network to itself)
        scaling_config=ScalingConfig(num_workers=train_cfg.workers, placement_strategy="SPREAD",
                                     resources_per_worker={"CPU": train_cfg.cpus_per_worker}),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage_path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=train_cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             worker_runtime_env={"env_vars": {**RUNTIME_ENV_VARS, **forwarded_env()}}),
    )
    log.info("training on %d Ray workers, checkpoints in %s/%s", train_cfg.workers, location, RUN_NAME)
    fs, base = storage.filesystem(location)
    diverged = f"{base}/{RUN_NAME}/{DIVERGED}"
    if fs.get_file_info(diverged).type == pafs.FileType.File:
        fs.delete_file(diverged)  # an earlier attempt's
    try:
        trainer.fit()
    except Exception as exc:  # Ray raises its own error types for a failed run
        raise ScaleoutError(f"Ray training failed: {exc}") from exc
    if fs.get_file_info(diverged).type == pafs.FileType.File:
        with fs.open_input_stream(diverged) as f:
            raise TrainingDiverged(f.read().decode())
    found = find_latest_checkpoint(location)
    if found is None or found[1]["epoch"] < train_cfg.epochs:
        raise ArtifactError(f"the Ray run finished without a checkpoint of epoch {train_cfg.epochs} under "
                            f"{location}/{RUN_NAME}")
    return _restore(found, location, dataset, model_cfg, tables)


def _restore(found: tuple[str, dict], location: str, dataset: Dataset, model_cfg: ModelConfig, tables=None):
    """The model of a checkpoint, rebuilt in this process: (model, history, resumed_at)."""
    from ray.train import Checkpoint

    from scaleout.tfenv import tf
    from scaleout.train.model import build_for_dataset

    path, state = found
    model = build_for_dataset(model_cfg, dataset, tables)
    model.collectives_json = json.dumps(state.get("collectives_per_step", []))  # as the workers traced their step
    model.trained_allocator = state.get("cpu_allocator", "unknown")  # a checkpoint from before it was recorded
    model.trained_pinning = state.get("cpu_pinning", "unknown")
    fs, _ = storage.filesystem(location)
    with Checkpoint(path, filesystem=fs).as_directory() as d:
        tf.train.Checkpoint(model=model).read(os.path.join(d, WEIGHTS)).expect_partial()
    return model, state["history"], state["resumed_at"]
