"""A run written before a setting existed records no value for it, and was made as the setting's default makes it:
`--resume` continues it at that default and refuses it, naming the default, at another value (prepared data,
a finished model, a checkpoint)."""

import dataclasses
import json

import pytest

from scaleout.config import DataConfig, ModelConfig, PipelineConfig, TrainConfig
from scaleout.data.dataset import MANIFEST, Dataset
from scaleout.data.prepare import prepare
from scaleout.errors import ConfigError
from scaleout.pipeline import _prepared
from scaleout.rundir import RunDir
from scaleout.train.checkpoints import RUN_NAME, STATE, resume_identity
from scaleout.train.ray_backend import preflight
from scaleout.train.run import finished_model
from scaleout.train.saved import MODEL_JSON

DATA = DataConfig(source="synthetic", synthetic_interactions=5000, train_shards=4)


@pytest.fixture()
def run(tmp_path):
    prepare(DATA, tmp_path / "data")
    return RunDir(tmp_path)


def test_data_prepared_before_a_setting_existed_is_resumed_at_its_default(run):
    manifest = json.loads((run.data / MANIFEST).read_text())
    del manifest["config"]["repeated_pairs"]  # a DataConfig setting added after this run was prepared
    (run.data / MANIFEST).write_text(json.dumps(manifest))
    resumed = TrainConfig(resume=True)
    assert _prepared(run, PipelineConfig(data=DATA, train=resumed)).path == run.data
    other = dataclasses.replace(DATA, source="generic", path="x.csv", repeated_pairs="all")
    with pytest.raises(ConfigError, match="repeated_pairs: prepared with 'first', now 'all'"):
        _prepared(run, PipelineConfig(data=other, train=resumed))


def test_a_model_trained_before_a_setting_existed_is_finished_at_its_default(run):
    dataset, train = Dataset(run.data), TrainConfig(epochs=3)
    model = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(ModelConfig()))).items()
             if k != "popularity_prior"}
    run.model.mkdir()
    (run.model / MODEL_JSON).write_text(json.dumps({
        "dataset_fingerprint": dataset.fingerprint, "model": model,
        "train": {"batch_size": train.batch_size, "seed": train.seed, "epochs": 3}}))  # no shuffle_buffer
    assert finished_model(run, dataset, ModelConfig(), train)
    with pytest.raises(ConfigError, match="other settings \\(model.popularity_prior: model 0.0, now 0.5\\)"):
        finished_model(run, dataset, ModelConfig(popularity_prior=0.5), train)
    with pytest.raises(ConfigError, match="other settings \\(train.shuffle_buffer: model 100000, now 7\\)"):
        finished_model(run, dataset, ModelConfig(), dataclasses.replace(train, shuffle_buffer=7))


def test_a_checkpoint_written_before_a_setting_existed_resumes_at_its_default(run, tmp_path):
    dataset, storage = Dataset(run.data), tmp_path / "ckpt"
    resumed = TrainConfig(backend="ray", batch_size=512, storage=str(storage), resume=True)
    older = resume_identity(ModelConfig(), resumed, dataset)
    del older["model.popularity_prior"], older["train.shuffle_buffer"]
    checkpoint = storage / RUN_NAME / "checkpoint_2026-01-01_00-00-00.000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / STATE).write_text(json.dumps({"epoch": 2, "identity": older, "history": [], "resumed_at": []}))
    location, _, identity = preflight(run, dataset, ModelConfig(), resumed, cluster_cpus=2)
    assert location == str(storage) and identity == resume_identity(ModelConfig(), resumed, dataset)  # the workers'
    with pytest.raises(ConfigError, match="other settings \\(model.popularity_prior: checkpoint 0.0, now 0.5\\)"):
        preflight(run, dataset, ModelConfig(popularity_prior=0.5), resumed, cluster_cpus=2)
    with pytest.raises(ConfigError, match="train.shuffle_buffer: checkpoint 100000, now 77"):
        preflight(run, dataset, ModelConfig(), dataclasses.replace(resumed, shuffle_buffer=77), cluster_cpus=2)
