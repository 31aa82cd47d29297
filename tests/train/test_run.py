"""`scaleout train` end to end on small data: a diverging run saves nothing; a model is bound to its data."""

import pytest

from conftest import run_cli
from runs import read_scalars

SMALL = ("--source", "synthetic", "--synthetic-users", 200, "--synthetic-items", 100, "--synthetic-interactions", 3000)


def test_a_loss_that_becomes_nan_stops_training_and_saves_no_model(tmp_path):
    run = tmp_path / "run"
    prepared = run_cli("prepare", "--run", run, *SMALL)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    result = run_cli("train", "--run", run, "--optimizer", "sgd", "--learning-rate", "1e30", "--epochs", 2,
                     "--batch-size", 256)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "training diverged: the loss was nan by step" in result.stderr and "no model was saved" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["data"]  # no model, no metrics, no temporary leftovers


@pytest.fixture(scope="module")
def reprepared(tmp_path_factory):
    """A small run trained, then its data prepared again with another split seed."""
    run = tmp_path_factory.mktemp("bound") / "run"
    for args in (("prepare", "--run", run, *SMALL), ("train", "--run", run, "--epochs", 1, "--batch-size", 256),
                 ("index", "--run", run, "--indexes", "brute_force", "--no-eval"),
                 ("prepare", "--run", run, *SMALL, "--seed", 7)):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.mark.parametrize("command", [
    ("evaluate",), ("quality", "--baselines"), ("index", "--indexes", "brute_force"),
    ("recommend", "--user", "u1"), ("export", "--kind", "brute_force"),
])
def test_every_stage_refuses_a_model_trained_on_data_prepared_again(reprepared, command):
    result = run_cli(command[0], "--run", reprepared, *command[1:])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{reprepared / 'model'} was trained on other data than {reprepared / 'data'} holds now" in result.stderr
    assert "the data was prepared again after training" in result.stderr


def test_verify_shows_what_was_built_on_the_data_prepared_before(reprepared):
    result = run_cli("verify", "--run", reprepared)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "vocabularies: its files changed since it was recorded" in result.stderr


def test_tensorboard_scalars_hold_every_epoch_of_the_history(tmp_path):
    from scaleout.train.run import write_scalars

    history = [{"epoch": 1, "loss_per_example": 7.5, "examples_per_second": 1000.0, "seconds": 2.0},
               {"epoch": 2, "loss_per_example": 6.25, "examples_per_second": 1500.0, "seconds": 1.5}]
    write_scalars(tmp_path / "tb", history)
    write_scalars(tmp_path / "tb", history)  # a second fit replaces the first's scalars
    scalars = read_scalars(tmp_path / "tb" / "train")
    assert scalars == {"loss_per_example": {1: 7.5, 2: 6.25}, "examples_per_second": {1: 1000.0, 2: 1500.0},
                       "seconds": {1: 2.0, 2: 1.5}}
