"""Everything the Ray backend refuses before a worker starts (no cluster needed)."""

import json

import pytest

from scaleout.config import DataConfig, ModelConfig, TrainConfig
from scaleout.data.dataset import Dataset
from scaleout.data.prepare import prepare
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError
from scaleout.train.checkpoints import RUN_NAME, STATE
from scaleout.train.ray_backend import assign_files, preflight, resume_identity, steps_per_epoch
from scaleout.rundir import RunDir


@pytest.fixture()
def run(tmp_path):
    prepare(DataConfig(source="synthetic", synthetic_interactions=5000, train_shards=4), tmp_path / "data")
    return RunDir(tmp_path)


def ray_cfg(**kwargs):
    return TrainConfig(**{"backend": "ray", "batch_size": 512, **kwargs})


def fake_checkpoint(storage, identity, epoch=2):
    d = storage / RUN_NAME / "checkpoint_2026-01-01_00-00-00.000000"
    d.mkdir(parents=True)
    (d / STATE).write_text(json.dumps({"epoch": epoch, "identity": identity, "history": [], "resumed_at": []}))


def test_files_and_steps_are_split_evenly(run):
    files = Dataset(run.data).files("train")
    assignment = assign_files(files, 2)
    assert assignment == [[files[0], files[2]], [files[1], files[3]]]
    assert steps_per_epoch(assignment, 256) == 2000 // 256  # 4000 train rows, 2000 a worker
    with pytest.raises(ConfigError, match="5 workers but only 4 train shards"):
        assign_files(files, 5)
    with pytest.raises(ConfigError, match="fewer than its batch of 4096"):
        steps_per_epoch(assignment, 4096)


def test_more_workers_than_cluster_cpus_is_refused(run):
    with pytest.raises(ConfigError, match="3 workers x 1 CPU need 3 CPUs; the Ray cluster has 2"):
        preflight(run, Dataset(run.data), ModelConfig(),
                  ray_cfg(workers=3, batch_size=513 * 3), cluster_cpus=2)


def test_global_batch_must_split_over_workers():
    with pytest.raises(ConfigError, match="not divisible by 3 workers"):
        TrainConfig(backend="ray", workers=3, batch_size=8192)


def test_unwritable_storage_is_refused(run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ScaleoutError, match="checkpoint storage .*a-file/ckpt is not writable"):
        preflight(run, Dataset(run.data), ModelConfig(), ray_cfg(storage=str(blocker / "ckpt")), cluster_cpus=2)


def test_checkpoints_of_another_run_need_resume_and_matching_settings(run, tmp_path):
    dataset, storage = Dataset(run.data), tmp_path / "ckpt"
    with pytest.raises(ArtifactError, match="--resume: no checkpoint to resume from"):
        preflight(run, dataset, ModelConfig(), ray_cfg(storage=str(storage), resume=True), cluster_cpus=2)
    cfg = ray_cfg(storage=str(storage))
    fake_checkpoint(storage, resume_identity(ModelConfig(), cfg, dataset))
    with pytest.raises(ArtifactError, match="holds checkpoints of an earlier run \\(epoch 2\\); pass --resume"):
        preflight(run, dataset, ModelConfig(), cfg, cluster_cpus=2)
    resumed = ray_cfg(storage=str(storage), resume=True, epochs=5)  # more epochs is fine
    assert preflight(run, dataset, ModelConfig(), resumed, cluster_cpus=2)[:2] == (str(storage), 2000 // 256)
    with pytest.raises(ConfigError, match="trained with other settings \\(model.embedding_dim: checkpoint 32, now 64\\)"):
        preflight(run, dataset, ModelConfig(embedding_dim=64), resumed, cluster_cpus=2)
    with pytest.raises(ConfigError, match="train.batch_size: checkpoint 512, now 1024"):
        preflight(run, dataset, ModelConfig(), TrainConfig(backend="ray", batch_size=1024, storage=str(storage),
                                                           resume=True), cluster_cpus=2)


def test_a_damaged_checkpoint_is_skipped_with_a_warning_and_the_newest_intact_one_is_used(tmp_path, caplog):
    from scaleout.train.checkpoints import find_latest_checkpoint

    storage = tmp_path / "ckpt"
    fake_checkpoint(storage, {"x": 1}, epoch=2)
    newest = storage / RUN_NAME / "checkpoint_2026-01-02_00-00-00.000000"
    newest.mkdir()
    (newest / STATE).write_text('{"epoch": 3, "identity": {"x": 1}, "hist')  # cut short by a dying worker
    path, state = find_latest_checkpoint(str(storage))
    assert state["epoch"] == 2 and path.endswith("checkpoint_2026-01-01_00-00-00.000000")
    assert f"skipping the damaged checkpoint {newest}" in caplog.text
