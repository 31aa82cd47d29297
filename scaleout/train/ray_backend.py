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
``train_func`` continues from the latest one (``scaleout.train.checkpoints``),
each worker's input where it left it (``stream_position``). The driver finally
rebuilds the model from the last checkpoint in one process, saves the towers
and evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from scaleout.config import ModelConfig, TrainConfig, from_dict
from scaleout.data.dataset import MANIFEST, Dataset
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError, TrainingDiverged
from scaleout import storage
from scaleout.nodes import check_cpus, check_nodes_share
from scaleout.rundir import RunDir
from scaleout.train.ray_failures import summary
from scaleout.scratch import scratch
from scaleout.storage import forwarded_env
from scaleout.tfenv import RUNTIME_ENV_VARS
from scaleout.train.checkpoints import (RUN_NAME, WEIGHTS, check_resume, check_storage, checkpoint_of, epochs_left,
                                        find_latest_checkpoint, resume_identity, stream_position)
from scaleout.train.cpus import pin_ray_worker
from scaleout.train.features import build_tables

log = logging.getLogger(__name__)
DIVERGED = "diverged.txt"  # written by rank 0 when the loss became NaN or infinite
PROFILE = "profile"  # each worker's trace of the profiled epoch, under worker-R (scaleout.train.profile)


# -- shared by driver and workers ------------------------------------------------

def assign_files(files: list[Path], workers: int) -> list[list[Path]]:
    """Worker i reads shards i, i + N, i + 2N, ..."""
    if len(files) < workers:
        raise ConfigError(f"{workers} workers but only {len(files)} train shards; every worker needs one. "
                          f"Prepare with --train-shards {workers} or more")
    return [files[i::workers] for i in range(workers)]


def _rows(files: list[Path]) -> int:
    """The rows of these Parquet shards, from their footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def batches_per_pass(files: list[Path], local_batch: int) -> int:
    """The full batches of ``local_batch`` rows one pass over ``files`` gives (the input drops the remainder)."""
    return _rows(files) // local_batch


def steps_per_epoch(assignment: list[list[Path]], local_batch: int) -> int:
    """Steps every worker can take each epoch: all must take the same number (collectives)."""
    rows = [_rows(files) for files in assignment]
    steps = min(rows) // local_batch
    if steps == 0:
        raise ConfigError(f"a worker holds {min(rows)} train rows, fewer than its batch of {local_batch}; "
                          "use fewer workers or a smaller --batch-size")
    return steps


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
    from scaleout.train.callbacks import learning_rate_schedule
    from scaleout.train.checkpoint_log import CheckpointEpochLog
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
    model.allreduce_dtype = train_cfg.allreduce_dtype
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
            after = "" if start_epoch + 1 == train_cfg.epochs else \
                f", then {epochs_left(start_epoch + 1, train_cfg.epochs)}"
            log.info("resuming from the checkpoint at step %d of %d of epoch %d/%d: the rest of it remains%s",
                     start_step, steps, start_epoch + 1, train_cfg.epochs, after)
        else:
            log.info("resuming from the checkpoint of epoch %d/%d: %s", start_epoch, train_cfg.epochs,
                     epochs_left(start_epoch, train_cfg.epochs))
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
    epoch_log = CheckpointEpochLog(saver=saver, work=work, train_cfg=train_cfg, steps=steps, rank=rank, world=world,
                                   history=history, resumed={**partial, "epoch": start_epoch + 1} if partial else None,
                                   record=lambda: {"resumed_at": resumed_at, "identity": config["identity"],
                                                   "collectives_per_step": model.step_collectives,
                                                   "cpu_allocator": model.trained_allocator, "cpu_pinning": pinning})
    scheduled = [*learning_rate_schedule(model_cfg, train_cfg.epochs), *tracer, epoch_log]
    position = stream_position(found[1], steps, per_pass, world) if found is not None else (0, 0)
    from scaleout.train.ring import join_ring, raised_as_is

    try:
        if train_cfg.allreduce_transport == "sockets" and world > 1:  # the step's all-reduce over a ring of sockets
            model.ring = join_ring(strategy, rank, world, ray.util.get_node_ip_address())
        # The ring's error reaches the fit as TensorFlow's own; Ray Train gets the RingError (ray_failures.cause)
        with raised_as_is(model.ring):
            if start_step:  # the rest of the epoch the checkpoint was taken in, as a fit of its own
                model.fit(dataset_fn(position), epochs=start_epoch + 1, initial_epoch=start_epoch,
                          steps_per_epoch=steps - start_step, verbose=0, callbacks=scheduled)
                position = divmod(position[0] * per_pass + position[1] + steps - start_step, per_pass)
                start_epoch += 1
            if start_epoch < train_cfg.epochs:
                model.fit(dataset_fn(position), epochs=train_cfg.epochs, initial_epoch=start_epoch,
                          steps_per_epoch=steps, verbose=0, callbacks=scheduled)
    except TrainingDiverged as exc:
        # Every worker sees the same global loss and stops at the same step. Ending normally, rather than
        # raising, keeps Ray Train from restarting the group from the last checkpoint into the same
        # divergence; the driver reads why from storage.
        if rank == 0:
            fs, base = storage.filesystem(config["storage"])
            with fs.open_output_stream(f"{base}/{RUN_NAME}/{DIVERGED}") as f:
                f.write(str(exc).encode())
    finally:
        if model.ring is not None:
            model.ring.close()


# -- the driver ---------------------------------------------------------------------

def storage_location(run: RunDir, train_cfg: TrainConfig) -> str:
    return train_cfg.storage or run.checkpoints


def profile_location(location: str) -> str:
    """Where the workers upload their traces of the profiled epoch (worker-R under it), under the checkpoints'
    ``location``."""
    return storage.join(location, RUN_NAME, PROFILE)


def preflight(run: RunDir, dataset: Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig,
              cluster_cpus: float) -> tuple[str, int, dict]:
    """Every check that can fail before training; returns the checkpoint location, the steps of an epoch and what
    a checkpoint must match to be continued (``resume_identity``)."""
    check_cpus(train_cfg.workers, train_cfg.cpus_per_worker, cluster_cpus)
    steps = steps_per_epoch(assign_files(dataset.files("train"), train_cfg.workers),
                            train_cfg.batch_size // train_cfg.workers)
    location = storage_location(run, train_cfg)
    check_storage(location)
    identity = resume_identity(model_cfg, train_cfg, dataset)
    check_resume(location, identity, train_cfg.resume)
    return location, steps, identity


def fit_ray(run: RunDir, model_cfg: ModelConfig, train_cfg: TrainConfig):
    """Trains on the connected Ray cluster; returns (model, history, resumed_at) as one process holds it.

    The caller has connected to the cluster (``ray.init``), with
    ``scaleout.tfenv.RUNTIME_ENV_VARS`` in the job's runtime environment.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    dataset = Dataset(run.data)
    location, steps, identity = preflight(run, dataset, model_cfg, train_cfg, ray.cluster_resources().get("CPU", 0))
    local = ([dataset.path / MANIFEST] if run.remote_uri("data") is None else []) + \
        ([Path(storage.filesystem(location)[1])] if not storage.is_remote(location) else [])
    if local:  # the workers read the data and write the checkpoints there, wherever Ray places them
        check_nodes_share(local, "the training data (or checkpoint directory)")
    run.sync()  # a remote run's dataset, committed before the workers fetch it
    # Side-feature codes, timestamp buckets, user histories and iALS's factors come from the whole train split,
    # built here once: a worker that fetches only its own shards from a store would otherwise build its own.
    tables = build_tables(dataset, model_cfg.features, model_cfg.history, model_cfg.ials)
    fs, storage_path = storage.filesystem(location)
    trainer = TensorflowTrainer(
        train_func,
        train_loop_config={"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
                           # workers on other nodes read the store, never the driver's disk
                           "dataset": run.remote_uri("data") or str(dataset.path.resolve()), "steps": steps,
                           "storage": location, "identity": identity,
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
        log.error("Ray Train's whole error:\n%s", exc)  # every worker's traceback; the error line gives one clause each
        raise ScaleoutError(f"Ray training failed (--max-failures {train_cfg.max_failures}): {summary(exc)}; each "
                            "worker's whole error is in the log above") from exc
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
