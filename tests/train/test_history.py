"""The history-aware query tower: the stored history table, the target kept out of its own history, items given
at request time, and the full and mixed softmax."""

import numpy as np
import pytest

from scaleout.config import DataConfig, ModelConfig
from scaleout.data.prepare import prepare
from scaleout.errors import ConfigError
from scaleout.tfenv import tf
from scaleout.train.features import FeatureTables, history_table
from scaleout.train.model import build_model
from scaleout.train.towers import embed_users, query_embeddings, uses_history

USERS = [f"u{i}" for i in range(4)]
ITEMS = [f"i{i}" for i in range(6)]
# user row + 1 -> candidate rows + 1, oldest first, 0 padding
HISTORY = np.array([[0, 0, 0], [1, 2, 3], [4, 0, 0], [0, 0, 0], [6, 5, 0]], np.int32)


def model(**options):
    cfg = ModelConfig(embedding_dim=3, history=3, user_embedding=False, **options)
    return build_model(cfg, USERS, ITEMS, FeatureTables(history=HISTORY), np.arange(1, 7))


def table(m, name="candidate_embedding"):
    return next(v for v in m.trainable_variables if v.name.startswith(name)).numpy()


def test_the_history_table_keeps_each_users_most_recent_distinct_items(tmp_path):
    rows = ["user_id,item_id,timestamp", "a,x,5", "a,y,1", "a,z,3", "a,y,9", "a,w,7", "b,x,2", "c,q,1",
            "d,x,100", "d,q,101"]  # d's rows are the latest: the test split
    (tmp_path / "e.csv").write_text("\n".join(rows) + "\n")
    ds = prepare(DataConfig(source="generic", path=str(tmp_path / "e.csv"), split="temporal", test_fraction=0.2,
                            train_shards=2, repeated_pairs="all"), tmp_path / "data")
    users = list(ds.vocabulary("user_id"))
    items = list(ds.candidates.column("movie_id").to_pylist())
    codes = history_table(ds, 3)
    decoded = {u: [items[c - 1] for c in codes[r + 1] if c] for r, u in enumerate(users)}
    assert codes.shape == (len(users) + 1, 3) and not codes[0].any()
    # a's items by time: y@1, z@3, x@5, w@7, y@9 -> distinct, latest time each: z, x, w, y; the 3 most recent
    assert decoded == {"a": ["x", "w", "y"], "b": ["x"], "c": ["q"]}


def test_the_query_is_the_mean_of_the_history_without_the_excluded_item():
    m = model()
    assert uses_history(m.query_tower)
    e = table(m)
    got = query_embeddings(m.query_tower, ["u0", "u0", "u3", "u1", "nobody"], exclude=["", "i1", "i4", "", ""]).numpy()
    np.testing.assert_allclose(got[0], e[[1, 2, 3]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[1], e[[1, 3]].mean(0), rtol=1e-6)  # i1 (row 2) left out: the training case
    np.testing.assert_allclose(got[2], e[[6]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got[3], e[4], rtol=1e-6)
    # unknown user, nothing given: the table's row 0, which settle_unknown_user sets to the users' mean history
    np.testing.assert_array_equal(got[4], e[0])


def test_items_given_at_request_time_extend_or_make_the_history():
    m = model()
    e = table(m)
    got = embed_users(m.query_tower, ["", "u1", "u0"], history=[["i5", "i0", ""], ["i2", "", ""], ["", "", "nope"]])
    np.testing.assert_allclose(got[0], e[[6, 1]].mean(0), rtol=1e-6)  # a new user: the items alone
    np.testing.assert_allclose(got[1], e[[4, 3]].mean(0), rtol=1e-6)  # a known user's history extended
    np.testing.assert_allclose(got[2], e[[1, 2, 3]].mean(0), rtol=1e-6)  # unknown ids and padding ignored


def test_a_separate_table_and_the_user_embedding_are_options():
    m = model(history_table="separate")
    h = table(m, "history_embedding")
    assert not np.allclose(h, table(m))
    np.testing.assert_allclose(embed_users(m.query_tower, ["u0"])[0], h[[1, 2, 3]].mean(0), rtol=1e-6)
    with_id = build_model(ModelConfig(embedding_dim=3, history=3), USERS, ITEMS, FeatureTables(history=HISTORY))
    ids = table(with_id, "user_embedding")
    np.testing.assert_allclose(embed_users(with_id.query_tower, ["u3"])[0], ids[4] + table(with_id)[[6, 5]].mean(0), rtol=1e-6)


def test_history_dropout_acts_in_training_only():
    m = model(history_dropout=0.5)
    users = tf.constant(["u0"] * 64)
    served = query_embeddings(m.query_tower, users).numpy()
    assert np.allclose(served, served[0])
    trained = query_embeddings(m.query_tower, users, training=True).numpy()
    assert len(np.unique(trained.round(6), axis=0)) > 1


def test_the_full_softmax_is_cross_entropy_over_every_candidate():
    m = model(negatives="full", temperature=0.5)
    features = {"user_id": tf.constant(["u0", "u2", "u3"]), "movie_id": tf.constant(["i1", "i4", "i0"])}
    loss = float(m.compute_loss(features, training=True))
    e = table(m)
    q = np.stack([e[[1, 3]].mean(0), np.zeros(3), e[[6, 5]].mean(0)])  # the target left out of its history
    logits = q @ e[1:].T / 0.5
    want = -(logits[[0, 1, 2], [1, 4, 0]] - np.log(np.exp(logits).sum(1))).sum()
    assert loss == pytest.approx(want, rel=1e-5)


def test_mixed_negatives_add_uniform_candidates_with_their_own_correction():
    m = model(negatives="mixed", sampled_negatives=5, logq_correction=True, remove_accidental_hits=True)
    own = tf.zeros([3, 3])
    rows = tf.constant([1, 2, 3], tf.int64)
    extra = {"candidate_sampling_probability": tf.constant([0.1, 0.2, 0.3])}
    candidate, rows_out, extra_out = m.with_sampled(own, rows, extra)
    assert candidate.shape == (8, 3) and rows_out.shape == (8,)
    assert set(rows_out.numpy()[3:]) <= set(range(1, 7))
    np.testing.assert_allclose(extra_out["candidate_sampling_probability"].numpy(),
                               [0.3, 0.6, 0.9] + [5 / 6] * 5, rtol=1e-6)
    features = {"user_id": tf.constant(["u0", "u2"]), "movie_id": tf.constant(["i1", "i4"])}
    assert np.isfinite(float(m.compute_loss(features, training=True)))


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="no input"):
        ModelConfig(user_embedding=False)
    with pytest.raises(ConfigError, match="sampled_negatives"):
        ModelConfig(negatives="mixed")
    with pytest.raises(ConfigError, match="sampled negatives only"):
        ModelConfig(negatives="full", logq_correction=True)
    with pytest.raises(ConfigError, match="full_softmax_max=5"):
        model(negatives="full", full_softmax_max=5)
    plain = build_model(ModelConfig(embedding_dim=3), USERS, ITEMS)
    assert not uses_history(plain.query_tower)
    with pytest.raises(ConfigError, match="no history input"):
        embed_users(plain.query_tower, ["u0"], history=[["i1"]])
