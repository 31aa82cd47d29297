"""What a Ray worker's checkpoint holds (scaleout.train.checkpoints.checkpoint_of): the towers and the optimizer
under the whole model's names, no metric variables; read back both ways, and by a checkpoint of the whole model."""

import numpy as np
import pytest

from scaleout.config import ModelConfig
from scaleout.tfenv import tf
from scaleout.train.features import FeatureTables
from scaleout.train.model import build_model
from scaleout.train.checkpoints import checkpoint_of

USERS = [f"u{i}" for i in range(4)]
ITEMS = [f"i{i}" for i in range(6)]
HISTORY = np.array([[0, 0, 0], [1, 2, 3], [4, 0, 0], [0, 0, 0], [6, 5, 0]], np.int32)
SETTINGS = {
    "default": {},
    "deep layers": {"deep_layers": (4,)},
    "history in a table of its own": {"history": 3, "history_table": "separate"},
    "history through the candidate table": {"history": 3, "history_table": "shared", "user_embedding": False},
}


def trained(setting: str, seed: int = 1):
    """A model of ``setting`` after one training step (its optimizer state not zero)."""
    options = SETTINGS[setting]
    tables = FeatureTables(history=HISTORY) if options.get("history") else None
    model = build_model(ModelConfig(embedding_dim=3, seed=seed, **options), USERS, ITEMS, tables, np.arange(1, 7))
    model.optimizer.build(model.trainable_variables)
    batch = {"user_id": tf.constant(["u0", "u1", "u3"]), "movie_id": tf.constant(["i1", "i4", "i5"])}
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    return model


def options_share_a_table(setting: str) -> bool:
    return SETTINGS[setting].get("history_table") == "shared"


def keys(path: str) -> set[str]:
    return {name for name, _ in tf.train.list_variables(path)} - {"_CHECKPOINTABLE_OBJECT_GRAPH"}


def values(variables) -> dict[str, np.ndarray]:
    return {v.name: v.numpy() for v in variables}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_checkpoint_is_the_whole_models_less_its_metrics(setting, tmp_path):
    model = trained(setting)
    towers = keys(checkpoint_of(model).write(str(tmp_path / "towers" / "weights")))
    whole = keys(tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(tmp_path / "whole" / "w")))
    # Left out: FactorizedTopK's counts and totals and the epoch's loss sum, all reset every epoch.
    kept = {k for k in whole if not k.startswith(("model/task/", "model/loss_sum/"))}
    assert len(whole) - len(kept) == 2 * len(ModelConfig().top_ks) + 1  # each top-k's count and total, the loss sum
    # The same variables, by the same names but for a table both towers hold, named by the path met first (the
    # object graph, not the names, is what a read follows: the next test reads it back).
    if options_share_a_table(setting):
        assert len(towers) == len(kept) and len(towers - kept) == 1
    else:
        assert towers == kept
    assert any("optimizer/_variables" in k for k in towers)  # the optimizer's slots

@pytest.mark.parametrize("setting", ["default", "history in a table of its own",
                                     "history through the candidate table"])
def test_a_checkpoint_reads_back_for_resuming_and_for_the_final_model(setting, tmp_path):
    model = trained(setting, seed=1)
    path = checkpoint_of(model).write(str(tmp_path / "weights"))

    resumed = trained(setting, seed=2)  # other weights and optimizer state before the read
    assert values(resumed.trainable_variables)[resumed.trainable_variables[0].name].tolist() != \
        values(model.trainable_variables)[model.trainable_variables[0].name].tolist()
    checkpoint_of(resumed).read(path).assert_existing_objects_matched()  # as a resumed worker reads it
    assert_same(values(resumed.trainable_variables), values(model.trainable_variables))
    assert_same(values(resumed.optimizer.variables()), values(model.optimizer.variables()))

    final = trained(setting, seed=3)  # as the driver rebuilds the final model (ray_backend._restore)
    tf.train.Checkpoint(model=final).read(path).expect_partial()
    assert_same(values(final.trainable_variables), values(model.trainable_variables))


def test_a_checkpoint_of_the_whole_model_still_resumes(tmp_path):
    model = trained("default", seed=1)  # as checkpoints were written before checkpoint_of
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(tmp_path / "weights"))
    resumed = trained("default", seed=2)
    checkpoint_of(resumed).read(path).assert_existing_objects_matched()
    assert_same(values(resumed.trainable_variables), values(model.trainable_variables))
    assert_same(values(resumed.optimizer.variables()), values(model.optimizer.variables()))


def test_a_trainable_variable_outside_the_towers_keeps_the_whole_model(tmp_path):
    model = trained("default")
    model.extra_scale = tf.Variable(2.0, name="extra_scale")  # tracked by the model, in no tower
    assert any(v.name.startswith("extra_scale") for v in model.trainable_variables)
    written = keys(checkpoint_of(model).write(str(tmp_path / "weights")))
    assert "model/extra_scale/.ATTRIBUTES/VARIABLE_VALUE" in written
    assert any(k.startswith("model/task/") for k in written)


def test_a_resumed_worker_s_input_continues_where_the_checkpoint_left_it():
    """Each worker's input is an endless stream of passes of ``per_pass`` batches, of which each epoch takes
    ``steps``: the position after 3 epochs and 5 steps of 10 is batch 35 of the stream, pass 2 at batch 9 for a
    worker with 13 batches a pass. Under another number of workers no position is the same: the pass of the
    checkpoint's epoch, the checkpoint's steps in."""
    from scaleout.train.checkpoints import progress, stream_position

    state = {"epoch": 3, "step": 5, "steps_per_epoch": 10, "workers": 2}
    assert stream_position(state, 10, 13, 2) == (2, 9)
    assert stream_position(state, 10, 10, 2) == (3, 5)  # a worker whose passes are its epochs
    assert stream_position({**state, "step": 0}, 10, 13, 2) == (2, 4)
    assert stream_position({k: v for k, v in state.items() if k != "step"}, 10, 13, 2) == (2, 4)  # an older state
    assert stream_position(state, 8, 9, 4) == (3, 5)
    assert stream_position(state, 4, 4, 4) == (3, 3)  # never past the new epoch's last step
    assert progress(state) > progress({**state, "step": 0}) > progress({"epoch": 2, "step": 9})


def test_which_epochs_keep_a_checkpoint_and_when_the_interval_is_asked():
    """``epoch_due``, both backends' rule: the last epoch always; every ``checkpoint_every``-th once the interval
    has passed; and the interval asked only for those (under Ray it is a collective every worker must call
    alike, so it must not be called for an epoch that is not every-N-th, nor for the last)."""
    from scaleout.config import TrainConfig
    from scaleout.train.checkpoints import epoch_due

    cfg = TrainConfig(epochs=7, checkpoint_every=3)
    asked = []

    def interval(passed):
        def ask():
            asked.append(True)
            return passed
        return ask

    assert [done for done in range(1, 8) if epoch_due(done, cfg, interval(True))] == [3, 6, 7]
    assert len(asked) == 2  # epochs 3 and 6; not 7, which is kept whatever the interval
    asked.clear()
    assert [done for done in range(1, 8) if epoch_due(done, cfg, interval(False))] == [7]
    assert len(asked) == 2


def test_a_resume_logs_what_is_left():
    from scaleout.train.checkpoints import epochs_left

    assert epochs_left(3, 6) == "epochs 4-6 remain"
    assert epochs_left(5, 6) == "epoch 6 remains"
    assert epochs_left(6, 6) == "no epoch remains"  # a run stopped after its last checkpoint, before its model
