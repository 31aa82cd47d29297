"""iALS's factors beside the towers' (--ials-weight): fitted once on the training split, held by the towers as
constants, served as q . c + W x u . v while training scores q . c alone."""

import numpy as np
import pytest
from test_model import BATCH_ITEMS, BATCH_USERS, C, ITEMS, Q, USERS, batch_loss, reloaded_scores

from scaleout.config import ModelConfig
from scaleout.errors import ConfigError
from scaleout.tfenv import tf
from scaleout.train.features import FeatureTables, build_tables
from scaleout.train.ials import factor_tables, ials_fit
from scaleout.train.model import build_model
from scaleout.train.towers import query_inputs

# By StringLookup row: row 0 an id outside the vocabulary's.
U = np.array([[0.5, 0.5, 0.5], [1.0, 0.0, 2.0], [1.0, -1.0, 0.0]], np.float32)
V = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 0.0, -1.0]], np.float32)
W = 2.0


def hybrid(weight=W, **kwargs):
    cfg = ModelConfig(embedding_dim=2, top_ks=(1, 3), ials_weight=weight, ials_factors=3, **kwargs)
    model = build_model(cfg, USERS, ITEMS, FeatureTables(ials_users=U, ials_items=V) if weight else None,
                        candidate_counts=np.array([5, 1, 2]))
    model.query_tower.get_layer("user_embedding").set_weights([Q])
    model.candidate_tower.get_layer("candidate_embedding").set_weights([C])
    return model


def test_served_scores_add_w_times_ials_and_training_scores_are_the_towers_own(tmp_path):
    model = hybrid()
    # Training: the loss of the same towers without iALS, to the float (the query's factors are zeros there).
    assert batch_loss(model) == batch_loss(hybrid(weight=0.0))
    trained = model.query_tower(query_inputs(BATCH_USERS), training=True).numpy()
    np.testing.assert_array_equal(trained[:, 2:], 0.0)
    queries = model.query_tower(query_inputs(["a", "b", "nobody"])).numpy()
    candidates = model.candidate_tower(tf.constant(ITEMS + ["unknown"])).numpy()
    assert queries.shape == (3, 5) and candidates.shape == (4, 5)
    expected = Q[[1, 2, 0]] @ C[[1, 2, 3, 0]].T + W * U[[1, 2, 0]] @ V[[1, 2, 3, 0]].T
    np.testing.assert_allclose(queries @ candidates.T, expected, rtol=1e-6)
    # FactorizedTopK ranks with it: user b's top 1 is z through iALS (u . v: x 0, y -2, z 3).
    data = tf.data.Dataset.from_tensor_slices({"user_id": ["b"], "movie_id": ["z"]}).batch(1)
    assert Q[2] @ C[3] < Q[2] @ C[2]  # without iALS y scores above z
    top1 = "factorized_top_k/top_1_categorical_accuracy"
    assert model.evaluate(data, return_dict=True, verbose=0)[top1] == 1.0
    assert hybrid(weight=0.0).evaluate(data, return_dict=True, verbose=0)[top1] == 0.0
    # Saved and loaded, the towers keep the factors and the weight.
    np.testing.assert_allclose(reloaded_scores(model, tmp_path), expected, rtol=1e-6)
    # Training moves the towers' tables, never the factors (not trainable, no L2 on them).
    assert not any("ials" in v.name for v in model.trainable_variables)


def test_factor_tables_are_implicits_factors_by_lookup_row_with_the_unknown_rows():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 12, 400)
    setting = {"factors": 4, "alpha": 3.0, "regularization": 1.0}
    user_table, item_table = factor_tables(users, items, 31, 13, setting)
    assert user_table.shape == (32, 4) and item_table.shape == (14, 4) and user_table.dtype == np.float32
    # the same as implicit's own fit of the binary matrix (repeats once), row 0 apart
    import scipy.sparse as sp
    matrix = sp.csr_matrix((np.ones(400, np.float32), (users, items)), shape=(31, 13))
    matrix.data[:] = 1.0
    model = ials_fit(matrix, setting)
    np.testing.assert_array_equal(user_table[1:], model.user_factors)
    np.testing.assert_array_equal(item_table[1:], model.item_factors)
    # the same again (seeded); an unknown user the interaction-weighted mean; user 30 has no interactions
    np.testing.assert_array_equal(factor_tables(users, items, 31, 13, setting)[0], user_table)
    per_user = np.asarray(matrix.sum(axis=1)).ravel()
    np.testing.assert_allclose(user_table[0], per_user @ user_table[1:] / per_user.sum(), rtol=1e-5)
    np.testing.assert_array_equal(item_table[0], 0.0)


def test_build_tables_fits_ials_on_the_training_split_alone(ml100k_dataset):
    setting = ModelConfig(ials_weight=1.0, ials_factors=8, ials_alpha=3.0, ials_l2=30.0).ials
    tables = build_tables(ml100k_dataset, (), ials=setting)
    users, items = ml100k_dataset.vocabulary("user_id"), ml100k_dataset.vocabulary("movie_id")
    assert tables.ials_users.shape == (len(users) + 1, 8) and tables.ials_items.shape == (len(items) + 1, 8)
    assert "iALS factors (8)" in tables.used
    # Refitted on the training rows read here, the same factors: nothing of the test split went in.
    import pyarrow as pa
    import pyarrow.parquet as pq
    train = pa.concat_tables(pq.read_table(f, columns=["user_id", "movie_id"]) for f in ml100k_dataset.files("train"))
    user_at, item_at = {v: r for r, v in enumerate(users)}, {v: r for r, v in enumerate(items)}
    u = np.array([user_at[v] for v in train.column("user_id").to_pylist()])
    i = np.array([item_at[v] for v in train.column("movie_id").to_pylist()])
    again_users, again_items = factor_tables(u, i, len(users), len(items), setting)
    np.testing.assert_array_equal(again_users, tables.ials_users)
    np.testing.assert_array_equal(again_items, tables.ials_items)
    assert build_tables(ml100k_dataset, ()).ials_users is None


def test_ials_settings_are_checked():
    with pytest.raises(ConfigError, match="ials_weight must be 0 \\(none\\) or more, got -1"):
        ModelConfig(ials_weight=-1)
    with pytest.raises(ConfigError, match="ials_alpha must be positive"):
        ModelConfig(ials_weight=1, ials_alpha=0)
    with pytest.raises(ConfigError, match="ials_weight needs the user embedding"):
        ModelConfig(ials_weight=1, history=5, user_embedding=False)
    with pytest.raises(ConfigError, match="ials_weight needs iALS's factors"):
        build_model(ModelConfig(embedding_dim=2, ials_weight=1.0), USERS, ITEMS)
    assert ModelConfig().ials is None
    assert ModelConfig(ials_weight=2).ials == {"factors": 128, "alpha": 3.0, "regularization": 30.0}


@pytest.mark.parametrize("options", [{"negatives": "full"}, {"hard_negatives": 1},
                                     {"hard_negatives": 1, "remove_accidental_hits": True, "logq_correction": True},
                                     {"negatives": "mixed", "sampled_negatives": 2}])
def test_every_loss_leaves_the_factors_out_in_training_and_the_metrics_keep_them(options):
    model, plain = hybrid(train_metrics=True, **options), hybrid(weight=0.0, train_metrics=True, **options)
    if options.get("negatives") != "mixed":  # (mixed draws its negatives at random)
        assert batch_loss(model) == batch_loss(plain)
    data = tf.data.Dataset.from_tensor_slices({"user_id": BATCH_USERS, "movie_id": BATCH_ITEMS}).batch(4)
    logs = model.fit(data, epochs=1, verbose=0).history  # a training step with its metrics: no width mismatch
    assert np.isfinite(logs["loss"][0])
    assert not any("ials" in v.name for v in model.trainable_variables)
