"""Presets: the quality preset is the committed search's choice; flags override a preset; the tutorial's stays."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from scaleout.cli.options import configs_from_args
from scaleout.cli import build_parser
from scaleout.config import ModelConfig, from_dict
from scaleout.errors import ConfigError
from scaleout.train.presets import PRESETS, configs

SEARCH = REPO / "benchmarks" / "results" / "quality" / "search.json"


def test_the_quality_preset_is_the_choice_of_the_committed_search():
    choice = json.loads(SEARCH.read_text())["choice"]
    model, train = configs("quality")
    # Settings the search did not vary (added after it ran) keep their defaults.
    assert model == from_dict(ModelConfig, choice["model"])
    assert (train.batch_size, train.epochs) == (choice["batch_size"], choice["epochs"])
    # Chosen on validation; the entry it names exists in the grid.
    names = [e["name"] for e in json.loads(SEARCH.read_text())["entries"]]
    assert choice["name"] in names


def test_the_history_preset_is_the_searchs_choice_among_history_towers():
    choice = json.loads(SEARCH.read_text())["history_choice"]
    model, train = configs("history")
    assert model == from_dict(ModelConfig, choice["model"])
    assert model.history and not model.user_embedding
    assert (train.batch_size, train.epochs) == (choice["batch_size"], choice["epochs"])


def test_flags_override_the_preset_and_the_default_preset_is_quality():
    parser = build_parser()
    model, train = configs_from_args(parser.parse_args(["train", "--run", "r"]))
    quality_model, quality_train = configs("quality")
    assert model == quality_model
    assert (train.batch_size, train.epochs) == (quality_train.batch_size, quality_train.epochs)
    model, train = configs_from_args(parser.parse_args(
        ["train", "--run", "r", "--preset", "tutorial", "--epochs", "5", "--logq-correction", "--features", "genres"]))
    assert train.epochs == 5 and train.batch_size == 8192
    assert model.logq_correction and model.features == ("genres",) and not model.remove_accidental_hits
    model, _ = configs_from_args(parser.parse_args(["train", "--run", "r", "--no-logq-correction"]))
    assert not model.logq_correction and model.remove_accidental_hits
    assert configs("tutorial")[0] == ModelConfig()


def test_unknown_presets_and_features_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'best'"):
        configs("best")
    with pytest.raises(ConfigError, match="unknown feature"):
        ModelConfig(features=("age", "shoe_size"))
    result = run_cli("train", "--run", tmp_path, "--features", "shoe_size")
    assert result.returncode == 2 and "invalid choice: 'shoe_size'" in result.stderr
    assert set(PRESETS) == {"quality", "history", "tutorial"}


@pytest.mark.slow  # trains the tutorial's model on ml-100k through the command line
def test_the_tutorial_preset_reproduces_the_tutorial(ml100k_dataset, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(ml100k_dataset.path, root / "data")
    result = run_cli("train", "--run", root, "--preset", "tutorial")
    assert result.returncode == 0, result.stderr[-3000:]
    top100 = json.loads(result.stdout)["factorized_top_k/top_100_categorical_accuracy"]
    assert 0.21 <= top100 <= 0.26, top100  # the tutorial printed 0.2334
    trained = json.loads((Path(root) / "metrics" / "train.json").read_text())
    assert [e["epoch"] for e in trained["epochs"]] == [1, 2, 3] and trained["train"]["batch_size"] == 8192
    assert trained["model"]["features"] == [] and not trained["model"]["logq_correction"]
