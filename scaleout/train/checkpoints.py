"""A run's checkpoints in storage, as Ray Train keeps them: what one holds, the newest complete one, and where a
resumed worker's input continues. The driver reads them (scaleout.train.ray_backend); the workers write them
through scaleout.train.checkpoint_log. Under RUN_NAME in the storage, one directory per checkpoint, each with
STATE (the epochs and steps done, the history, what the run was made from, every file and its size) and the
towers' and optimizer's variables under WEIGHTS."""

from __future__ import annotations

import dataclasses
import json
import logging

import pyarrow.fs as pafs

from scaleout import storage
from scaleout.config import ModelConfig, TrainConfig, defaults
from scaleout.data.dataset import Dataset
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError, settings_differ

log = logging.getLogger(__name__)
RUN_NAME = "train"
STATE = "state.json"
WEIGHTS = "weights"


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


def progress(state: dict) -> tuple[int, int]:
    """How far the checkpoint ``state`` had trained: (epochs done, steps into the next)."""
    return state["epoch"], state.get("step", 0)


def epochs_left(done: int, epochs: int) -> str:
    """What a resume has left to train, for its log line: "epochs 4-6 remain", "epoch 6 remains", "no epoch
    remains"."""
    if done >= epochs:
        return "no epoch remains"
    return f"epoch {epochs} remains" if done + 1 == epochs else f"epochs {done + 1}-{epochs} remain"


# A setting added after a checkpoint was written is taken at its default there (see errors.settings_differ).
IDENTITY_DEFAULTS = defaults(ModelConfig, "model.") | defaults(TrainConfig, "train.")


def resume_identity(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> dict:
    """What a checkpoint must match to be continued, flat and as JSON gives it back. The data by what it holds
    (``Dataset.fingerprint``, as a saved model records it), not by when it was prepared: the same source prepared
    again with the same settings is the same data, and the run it stopped continues on it."""
    identity = {f"model.{k}": v for k, v in dataclasses.asdict(model_cfg).items()}
    identity.update({f"train.{k}": getattr(train_cfg, k) for k in ("batch_size", "shuffle_buffer", "seed")})
    identity["dataset fingerprint"] = dataset.fingerprint
    return json.loads(json.dumps(identity))


class NothingToResume(ArtifactError):
    """``--resume`` found no checkpoint to continue."""


def check_resume(location: str, identity: dict | None, resume: bool) -> tuple[str, dict] | None:
    """(path, state) of the checkpoint a run continues (``resume``), or None for a fresh run; an error, before
    any training, for ``--resume`` with nothing to resume, for checkpoints of an earlier run without it, and for
    a checkpoint trained with other settings than ``identity`` (each differing setting named; None: not known
    yet, checked when it is)."""
    found = find_latest_checkpoint(location)
    state = None if found is None else found[1]
    if state is None and resume:
        raise NothingToResume(f"--resume: no checkpoint to resume from under {location}/{RUN_NAME}")
    if state is not None and not resume:
        at = f", step {state['step']} of epoch {state['epoch'] + 1}" if state.get("step") else ""
        raise ArtifactError(f"{location}/{RUN_NAME} holds checkpoints of an earlier run (epoch {state['epoch']}{at}); "
                            "pass --resume to continue it, or remove that directory to start over")
    if state is not None and identity is not None:
        detail = settings_differ(state["identity"], dict(sorted(identity.items())), "checkpoint", IDENTITY_DEFAULTS)
        if detail:
            raise ConfigError(f"--resume: the checkpoint under {location}/{RUN_NAME} was trained with other settings "
                              f"({detail})")
    return found


def epoch_due(done: int, cfg: TrainConfig, interval_passed) -> bool:
    """Whether a fit keeps a checkpoint after epoch ``done``: after the last always, and after every
    ``checkpoint_every``-th once ``interval_passed()`` (called only then: under Ray it is a collective that
    every worker calls alike) says ``checkpoint_min_interval`` has passed since the one before."""
    return done == cfg.epochs or (not done % cfg.checkpoint_every and interval_passed())


def find_latest_checkpoint(location: str) -> tuple[str, dict] | None:
    """(path, state) of the newest complete checkpoint of the run under ``location``, or None.

    A checkpoint is complete when every file its state.json lists is there with
    its size: an upload cut short by a dying worker is passed over.
    """
    found = complete_checkpoints(location)
    return found[-1] if found else None


def complete_checkpoints(location: str) -> list[tuple[str, dict]]:
    """(path, state) of every complete checkpoint under ``location``, the newest last (see
    ``find_latest_checkpoint``)."""
    fs, base = storage.filesystem(location)
    complete = []
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
            complete.append((info.path, state))
    return sorted(complete, key=lambda found: progress(found[1]))


def latest_checkpoint_state(location: str) -> dict | None:
    """state.json of the newest complete checkpoint under ``location``, or None."""
    found = find_latest_checkpoint(location)
    return None if found is None else found[1]


def check_storage(location: str) -> None:
    """ScaleoutError unless ``location`` can be created and written."""
    if storage.is_remote(location):
        storage.preflight(location)
        return
    fs, base = storage.filesystem(location)
    marker = f"{base}/.scaleout-write-check"
    try:
        made = fs.get_file_info(base).type == pafs.FileType.NotFound
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(marker) as f:
            f.write(b"ok")
        fs.delete_file(marker)
        if made:  # left as it was: a run that fails before its first checkpoint leaves no empty directory
            fs.delete_dir(base)
    except OSError as exc:
        raise ScaleoutError(f"checkpoint storage {location} is not writable: {exc}") from exc
