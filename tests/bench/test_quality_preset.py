"""quality_preset.py's override flags: each sets its one setting of the preset and tags the results file's name."""

import dataclasses
import re

import pytest

from benchscripts import load

from scaleout.config import ModelConfig, TrainConfig
from scaleout.train.presets import configs


def test_each_override_sets_the_config_that_has_its_field():
    preset = load("quality_preset")
    fields = {ModelConfig: {f.name for f in dataclasses.fields(ModelConfig)},
              TrainConfig: {f.name for f in dataclasses.fields(TrainConfig)}}
    assert preset.OVERRIDES and len({o.tag for o in preset.OVERRIDES}) == len(preset.OVERRIDES)
    for o in preset.OVERRIDES:
        assert o.field in fields[o.config], o
    assert {o.config for o in preset.OVERRIDES} == {ModelConfig, TrainConfig}
    # a field of neither config, or of both (seed), is refused where the override is written
    for field, found in (("l2_penalty", "neither"), ("seed", "['ModelConfig', 'TrainConfig']")):
        with pytest.raises(ValueError, match=re.escape(f"override {field!r}: expected a field of exactly one of "
                                                       f"ModelConfig and TrainConfig, found it in {found}")):
            preset.Override(field, "x", "help")


def test_the_flags_set_the_preset_and_tag_the_file_in_the_tables_order():
    preset = load("quality_preset")
    args = preset.arguments().parse_args(["--learning-rate-schedule", "cosine", "--l2", "0.12",
                                          "--allreduce-dtype", "float32", "--popularity-prior", "0.2"])
    suffix, model_over, train_over = preset.overridden(args)
    # the names the committed results files carry (preset_quality_l2-0.12.json, ..._lr-cosine.json)
    assert suffix == "_prior-0.2_allreduce-float32_l2-0.12_lr-cosine"
    model_cfg, train_cfg = configs("quality", model=model_over, train=train_over)
    default_model, default_train = configs("quality")
    assert (model_cfg.l2, model_cfg.learning_rate_schedule, model_cfg.popularity_prior) == (0.12, "cosine", 0.2)
    assert train_cfg.allreduce_dtype == "float32" != default_train.allreduce_dtype
    assert model_cfg.init_stddev == default_model.init_stddev  # not given: the preset's
    assert preset.overridden(preset.arguments().parse_args([])) == ("", {}, {})


def test_ials_own_setting_goes_with_its_weight_and_tags_the_file():
    preset = load("quality_preset")
    args = preset.arguments().parse_args(["--ials-weight", "2", "--ials-alpha", "2", "--ials-l2", "40"])
    suffix, model_over, _ = preset.overridden(args)
    assert suffix == "_ials-2_ials-alpha-2_ials-l2-40"
    model_cfg, _ = configs("quality", model=model_over)
    assert model_cfg.ials == {"factors": 128, "alpha": 2.0, "regularization": 40.0}
    assert model_cfg.ials_weight == 2.0
    for alone in (["--ials-alpha", "2"], ["--ials-l2", "40"]):  # a setting of an iALS nothing serves
        with pytest.raises(SystemExit, match="give --ials-weight W"):
            preset.overridden(preset.arguments().parse_args(alone))


def test_the_epochs_set_training_and_tag_the_file_before_the_ials_weight():
    preset = load("quality_preset")
    suffix, model_over, train_over = preset.overridden(preset.arguments().parse_args(["--ials-weight", "4",
                                                                                      "--epochs", "11"]))
    assert suffix == "_epochs-11_ials-4"  # preset_quality_epochs-11_ials-4.json
    model_cfg, train_cfg = configs("quality", model=model_over, train=train_over)
    assert (train_cfg.epochs, model_cfg.ials_weight) == (11, 4.0) and configs("quality")[1].epochs == 14


@pytest.mark.parametrize("flag", ["--learning-rate-schedule", "--allreduce-dtype"])
def test_a_choice_outside_the_settings_is_refused(flag, capsys):
    preset = load("quality_preset")
    with pytest.raises(SystemExit) as exit_:
        preset.arguments().parse_args([flag, "nosuch"])
    assert exit_.value.code == 2 and "invalid choice: 'nosuch'" in capsys.readouterr().err
