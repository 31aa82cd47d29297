import dataclasses

import pytest

from scaleout.config import DataConfig, ModelConfig, TrainConfig, from_dict
from scaleout.errors import ConfigError


def test_configs_round_trip_through_dicts():
    for cfg in (DataConfig(source="synthetic", synthetic_items=7), ModelConfig(top_ks=[1, 3]), TrainConfig(epochs=9)):
        assert from_dict(type(cfg), dataclasses.asdict(cfg)) == cfg


def test_from_dict_names_unknown_settings():
    with pytest.raises(ConfigError, match="unknown setting.*'lr'"):
        from_dict(ModelConfig, {"lr": 0.1})


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "netflix"}, "unknown source 'netflix'"),
    ({"source": "movielens"}, "needs a path"),
    ({"split": "leave-one-out"}, "unknown split"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"train_shards": 0}, "train_shards"),
])
def test_bad_data_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**kwargs)


def test_model_defaults_are_the_tutorials():
    m, t = ModelConfig(), TrainConfig()
    assert (m.embedding_dim, m.optimizer, m.learning_rate, m.train_metrics) == (32, "adagrad", 0.1, False)
    assert (t.batch_size, t.epochs) == (8192, 3)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        ModelConfig(optimizer="lamb")


def test_ray_workers_are_pinned_unless_the_command_line_says_not():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    assert configs_from_args(parser.parse_args(["--backend", "ray"]))[1].pin_cpus is True
    _, train = configs_from_args(parser.parse_args(["--backend", "ray", "--no-pin-cpus", "--workers", "4"]))
    assert (train.pin_cpus, train.workers) == (False, 4)


def test_checkpoints_upload_in_the_background_unless_asked_to_wait():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    assert configs_from_args(parser.parse_args(["--backend", "ray"]))[1].checkpoint_upload == "async"
    assert configs_from_args(parser.parse_args(["--checkpoint-upload", "sync"]))[1].checkpoint_upload == "sync"
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoint-upload", "later"])
    with pytest.raises(ConfigError, match="unknown checkpoint_upload 'later'; expected one of async, sync"):
        TrainConfig(checkpoint_upload="later")


def test_checkpoints_within_epochs_are_off_unless_asked_for():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    assert configs_from_args(parser.parse_args(["--backend", "ray"]))[1].checkpoint_every_steps == 0
    assert configs_from_args(parser.parse_args(["--checkpoint-every-steps", "500"]))[1].checkpoint_every_steps == 500
    with pytest.raises(ConfigError, match="checkpoint_every_steps must be 0 or more, got -1"):
        TrainConfig(checkpoint_every_steps=-1)


def test_the_all_reduce_dtype_is_the_presets_unless_given():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    # The quality preset (the default) all-reduces in bfloat16; the tutorial's keeps float32; the flag wins.
    assert configs_from_args(parser.parse_args(["--backend", "ray"]))[1].allreduce_dtype == "bfloat16"
    assert configs_from_args(parser.parse_args(["--preset", "tutorial"]))[1].allreduce_dtype == "float32"
    assert configs_from_args(parser.parse_args(["--allreduce-dtype", "float32"]))[1].allreduce_dtype == "float32"
    assert configs_from_args(parser.parse_args(["--allreduce-dtype", "bfloat16"]))[1].allreduce_dtype == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--allreduce-dtype", "float16"])
    with pytest.raises(ConfigError, match="unknown allreduce_dtype 'float16'; expected one of float32, bfloat16"):
        TrainConfig(allreduce_dtype="float16")


def test_the_all_reduce_travels_over_the_socket_ring_unless_tensorflow_is_asked():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    for preset in ("quality", "tutorial", "history"):  # every preset: the transport does not change the sums
        assert configs_from_args(parser.parse_args(["--preset", preset]))[1].allreduce_transport == "sockets"
    given = parser.parse_args(["--allreduce-transport", "tensorflow"])
    assert configs_from_args(given)[1].allreduce_transport == "tensorflow"
    with pytest.raises(SystemExit):
        parser.parse_args(["--allreduce-transport", "gloo"])
    with pytest.raises(ConfigError, match="unknown allreduce_transport 'gloo'; expected one of tensorflow, sockets"):
        TrainConfig(allreduce_transport="gloo")


def test_cosine_scores_are_off_unless_the_command_line_turns_them_on():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    assert configs_from_args(parser.parse_args([]))[0].cosine is False
    model, _ = configs_from_args(parser.parse_args(["--cosine", "--temperature", "0.1"]))
    assert (model.cosine, model.temperature) == (True, 0.1)
