"""The learning rate's schedule (ModelConfig.learning_rate_schedule): each epoch's rate (the optimizer's, in the
epoch's history entry), in a fresh fit and in one resumed from a checkpoint, where the epochs after the resume train
at the uninterrupted run's rates."""

import dataclasses
import math

import pytest

from runs import read_scalars
from scaleout.config import DataConfig, ModelConfig, TrainConfig
from scaleout.data.prepare import prepare
from scaleout.errors import ConfigError
from scaleout.tfenv import tf
from scaleout.train.local import fit_checkpointed
from scaleout.train.run import write_scalars

EPOCHS = 4
TRAIN = TrainConfig(epochs=EPOCHS, batch_size=256, checkpoint_min_interval=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepare(DataConfig(source="synthetic", synthetic_users=200, synthetic_items=50,
                              synthetic_interactions=3000), tmp_path_factory.mktemp("rates") / "data")


class CrashAt(tf.keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise RuntimeError(f"crashed as epoch {self.epoch} began")


def rates(history: list[dict]) -> dict[int, float]:
    return {e["epoch"]: e["learning_rate"] for e in history}


def cosine(rate: float, epoch: int) -> float:
    return rate * (1 + math.cos(math.pi * (epoch - 0.5) / EPOCHS)) / 2


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_each_epoch_trains_at_its_scheduled_rate(dataset, schedule, tmp_path):
    _, history, _ = fit_checkpointed(dataset, ModelConfig(learning_rate=0.2, learning_rate_schedule=schedule), TRAIN)
    want = {e: 0.2 if schedule == "constant" else cosine(0.2, e) for e in range(1, EPOCHS + 1)}
    assert rates(history) == pytest.approx(want, rel=1e-6)
    write_scalars(tmp_path / "tb", history)  # and TensorBoard's curve of it
    assert read_scalars(tmp_path / "tb" / "train")["learning_rate"] == pytest.approx(want, rel=1e-6)
    assert not any("lr" in e for e in history)  # Keras' scheduler logs it too: recorded once
    if schedule == "cosine":  # from nearly the full rate to nearly none, as trained
        assert rates(history)[1] > 0.19 and rates(history)[EPOCHS] < 0.02


def test_a_resumed_fit_trains_the_epochs_left_at_the_uninterrupted_runs_rates(dataset, tmp_path):
    model_cfg = ModelConfig(learning_rate_schedule="cosine")
    _, uninterrupted, _ = fit_checkpointed(dataset, model_cfg, TRAIN, location=str(tmp_path / "whole"))
    with pytest.raises(RuntimeError, match="crashed as epoch 3 began"):
        fit_checkpointed(dataset, model_cfg, TRAIN, [CrashAt(3)], location=str(tmp_path / "crashed"))
    _, history, resumed_at = fit_checkpointed(dataset, model_cfg, dataclasses.replace(TRAIN, resume=True),
                                              location=str(tmp_path / "crashed"))
    assert resumed_at == [2]
    assert rates(history) == pytest.approx(rates(uninterrupted), rel=1e-6)
    assert rates(uninterrupted) == pytest.approx({e: cosine(0.1, e) for e in range(1, EPOCHS + 1)}, rel=1e-6)
    for got, want in zip(history[2:], uninterrupted[2:]):  # the same weights, optimizer state, input and rates
        assert got["loss_per_example"] == pytest.approx(want["loss_per_example"], rel=1e-5), (got, want)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="unknown learning_rate_schedule 'step'; expected one of constant, cosine"):
        ModelConfig(learning_rate_schedule="step")
