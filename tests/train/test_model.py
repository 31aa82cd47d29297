import numpy as np
import pytest

from scaleout.config import ModelConfig
from scaleout.errors import ArtifactError, ConfigError
from scaleout.tfenv import tf
from scaleout.train.model import build_model
from scaleout.train.towers import query_inputs

USERS, ITEMS = ["a", "b"], ["x", "y", "z"]
# Row 0 of each table is the unknown-id row.
Q = np.array([[0.0, 0.0], [1.0, 0.5], [-0.5, 2.0]], np.float32)
C = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], np.float32)


def tiny_model(counts=None, **kwargs):
    model = build_model(ModelConfig(embedding_dim=2, top_ks=(1, 3), **kwargs), USERS, ITEMS, candidate_counts=counts)
    model.query_tower.get_layer("user_embedding").set_weights([Q])
    model.candidate_tower.get_layer("candidate_embedding").set_weights([C])
    return model


def log_softmax(x):
    return x - np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)) - x.max(axis=1, keepdims=True)


def test_towers_look_up_ids_with_an_unknown_row():
    model = tiny_model()
    out = model.query_tower(query_inputs(["b", "a", "nobody"])).numpy()
    np.testing.assert_allclose(out, Q[[2, 1, 0]])
    assert model.candidate_tower.get_layer("candidate_embedding").input_dim == len(ITEMS) + 1


@pytest.mark.parametrize("values_at_a_time", [1 << 27, 1])  # one read of the table; a read per row
def test_the_unknown_users_row_is_set_to_the_interaction_weighted_mean_of_the_users_rows(monkeypatch, values_at_a_time):
    from scaleout.train import towers, unknown_user

    monkeypatch.setattr(unknown_user, "SETTLE_VALUES", values_at_a_time)
    model = tiny_model()
    # User "a" has 3 training interactions, "b" 1: the average interaction's user is 3/4 a + 1/4 b.
    assert unknown_user.settle_unknown_user(model.query_tower, np.array([3, 1])) == unknown_user.UNKNOWN_USER
    out = model.query_tower(query_inputs(["nobody", "a", "b"])).numpy()
    np.testing.assert_allclose(out[0], 0.75 * Q[1] + 0.25 * Q[2], rtol=1e-6)
    np.testing.assert_array_equal(out[1:], Q[1:])  # the known users' rows are untouched
    with pytest.raises(ArtifactError, match="user_embedding.* has 3 rows; expected one per user of the vocabulary "
                                            "\\(3\\)"):
        unknown_user.settle_unknown_user(model.query_tower, np.array([3, 1, 2]))
    with pytest.raises(ArtifactError, match="counts no training interactions"):
        unknown_user.settle_unknown_user(model.query_tower, np.array([0, 0]))
    other = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(2, name="dense")])
    with pytest.raises(ArtifactError, match="neither a user id embedding nor a history; expected at least one "
                                            "\\(its layers: dense\\)"):
        unknown_user.settle_unknown_user(other, np.array([3, 1]))


def test_the_unknown_users_query_is_the_weighted_mean_of_the_users_queries_with_their_side_features(monkeypatch):
    from scaleout.train import towers, unknown_user
    from scaleout.train.features import CodedFeature, FeatureTables

    monkeypatch.setattr(unknown_user, "SETTLE_VALUES", 1)  # a read per row: the code weights summed over reads
    # One code per user (row 0's code present, as a dataset could give it) and a list pooled by mean.
    age = CodedFeature("age", np.array([[1], [2], [1]], np.int32), size=2)
    topics = CodedFeature("topics", np.array([[0, 0], [1, 2], [2, 0]], np.int32), size=2)
    tower = towers.query_tower(ModelConfig(embedding_dim=2), USERS, FeatureTables(query=[age, topics]))
    tower.get_layer("user_embedding").set_weights([Q])
    e_age = np.array([[0, 0], [1, -1], [2, 3]], np.float32)
    e_topics = np.array([[0, 0], [-2, 1], [4, 0.5]], np.float32)
    tower.get_layer("age_embedding").set_weights([e_age])
    tower.get_layer("topics_embedding").set_weights([e_topics])
    known = tower(query_inputs(["a", "b"])).numpy()
    np.testing.assert_allclose(known, [Q[1] + e_age[2] + (e_topics[1] + e_topics[2]) / 2,
                                       Q[2] + e_age[1] + e_topics[2]], rtol=1e-6)
    assert unknown_user.settle_unknown_user(tower, np.array([3, 1])) == unknown_user.UNKNOWN_USER
    out = tower(query_inputs(["nobody", "a", "b"])).numpy()
    np.testing.assert_allclose(out[0], 0.75 * known[0] + 0.25 * known[1], rtol=1e-6)
    np.testing.assert_array_equal(out[1:], known)


def test_above_relu_layers_the_unknown_users_row_is_the_mean_of_the_id_rows():
    from scaleout.train import towers, unknown_user
    from scaleout.train.features import CodedFeature, FeatureTables

    age = CodedFeature("age", np.array([[0], [2], [1]], np.int32), size=2)
    tower = towers.query_tower(ModelConfig(embedding_dim=2, deep_layers=(4,)), USERS, FeatureTables(query=[age]))
    tower.get_layer("user_embedding").set_weights([Q])
    assert unknown_user.settle_unknown_user(tower, np.array([3, 1])) == unknown_user.UNKNOWN_USER_DEEP
    np.testing.assert_allclose(tower.get_layer("user_embedding").get_weights()[0][0], 0.75 * Q[1] + 0.25 * Q[2],
                               rtol=1e-6)


@pytest.mark.parametrize("values_at_a_time", [1 << 27, 1])  # one read of each table; a read per row
@pytest.mark.parametrize("table", ["candidate_embedding", "history_embedding"], ids=["shared", "separate"])
@pytest.mark.parametrize("user_embedding", [False, True], ids=["history only", "history and id"])
def test_a_query_with_no_history_items_pools_the_users_mean_history(monkeypatch, user_embedding, table,
                                                                   values_at_a_time):
    from scaleout.train import towers, unknown_user
    from scaleout.train.features import FeatureTables

    monkeypatch.setattr(unknown_user, "SETTLE_VALUES", values_at_a_time)
    cfg = ModelConfig(embedding_dim=2, history=2, user_embedding=user_embedding,
                      history_table="separate" if table == "history_embedding" else "shared")
    # a's stored history: x and y; b's: z (candidate rows + 1); row 0 (unknown users) empty
    tables = FeatureTables(history=np.array([[0, 0], [1, 2], [3, 0]], np.int32))
    tower = towers.query_tower(cfg, USERS, tables, ITEMS, history_embedding=towers.item_embedding(cfg, ITEMS, table))
    tower.get_layer(table).set_weights([C])
    if user_embedding:
        tower.get_layer("user_embedding").set_weights([Q])
    known = tower(query_inputs(["a", "b"], with_history=True)).numpy()
    np.testing.assert_allclose(known, np.array([(C[1] + C[2]) / 2, C[3]]) + (Q[1:] if user_embedding else 0),
                               rtol=1e-6)
    held = unknown_user.settle_unknown_user(tower, np.array([3, 1]))
    assert held == (f"{unknown_user.UNKNOWN_USER}; " if user_embedding else "") + unknown_user.UNKNOWN_HISTORY
    out = tower(query_inputs(["nobody", "a", "b", "nobody"], history=[[""], [""], [""], ["z"]],
                             with_history=True)).numpy()
    np.testing.assert_allclose(out[0], 0.75 * known[0] + 0.25 * known[1], rtol=1e-6)
    np.testing.assert_array_equal(out[1:3], known)
    # a new user who gives items is served from them (and the unknown user's id row), not the mean history
    np.testing.assert_allclose(out[3], C[3] + (0.75 * Q[1] + 0.25 * Q[2] if user_embedding else 0), rtol=1e-6)
    # in training, a history with nothing kept pools nothing, as before
    trained = tower(query_inputs(["nobody"], with_history=True), training=True).numpy()
    np.testing.assert_allclose(trained[0], 0.75 * Q[1] + 0.25 * Q[2] if user_embedding else 0, rtol=1e-6)


@pytest.mark.parametrize("settings", [{}, {"negatives": "full"}, {"hard_negatives": 5}],
                         ids=["in-batch", "full softmax", "hard negatives"])
def test_evaluate_ranks_each_positive_against_the_other_candidates_not_its_own_row(settings):
    # The positive's score and its own catalogue row's round apart by an ulp at 128 dimensions (the row above it
    # for many queries, a top-1 hit read as a miss); each of the loss's three paths passes the rows to the metric.
    rng = np.random.default_rng(11)
    users, items = [f"u{i}" for i in range(30)], [f"i{i}" for i in range(40)]
    model = build_model(ModelConfig(embedding_dim=128, top_ks=(1, 2, 5), **settings), users, items)
    q, c = rng.standard_normal((31, 128)).astype(np.float32), rng.standard_normal((41, 128)).astype(np.float32)
    model.query_tower.get_layer("user_embedding").set_weights([q])
    model.candidate_tower.get_layer("candidate_embedding").set_weights([c])
    u, i = rng.integers(0, 30, 400), rng.integers(0, 40, 400)
    data = tf.data.Dataset.from_tensor_slices({"user_id": np.array(users)[u], "movie_id": np.array(items)[i]})
    metrics = model.evaluate(data.batch(100), return_dict=True, verbose=0)
    scores = q[u + 1].astype(np.float64) @ c[1:].T.astype(np.float64)
    above = (scores > scores[np.arange(400), i][:, None]).sum(axis=1)
    np.testing.assert_allclose([metrics[f"factorized_top_k/top_{k}_categorical_accuracy"] for k in (1, 2, 5)],
                               [np.mean(above < k) for k in (1, 2, 5)], rtol=1e-6)


def test_loss_is_the_in_batch_softmax_computed_by_hand():
    model = tiny_model()
    features = {"user_id": tf.constant(["a", "b"]), "movie_id": tf.constant(["x", "z"])}
    q, c = Q[[1, 2]], C[[1, 3]]
    expected = -np.trace(log_softmax(q @ c.T))  # positives on the diagonal, summed over the batch
    loss = model.compute_loss(features, training=True).numpy()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_factorized_top_k_ranks_all_candidates():
    model = tiny_model()
    users = ["a", "a", "b", "b"]
    items = ["x", "y", "z", "x"]
    data = tf.data.Dataset.from_tensor_slices({"user_id": users, "movie_id": items}).batch(4)
    metrics = model.evaluate(data, return_dict=True, verbose=0)
    scores = Q[[USERS.index(u) + 1 for u in users]] @ C[1:].T  # [4 queries, 3 candidates]
    positive = scores[np.arange(4), [ITEMS.index(i) for i in items]]
    top1 = np.mean(positive >= scores.max(axis=1))
    assert metrics["factorized_top_k/top_1_categorical_accuracy"] == pytest.approx(top1)
    assert metrics["factorized_top_k/top_3_categorical_accuracy"] == pytest.approx(1.0)


@pytest.mark.parametrize("train_metrics", [False, True])
def test_training_metrics_are_off_unless_asked_for(train_metrics):
    model = tiny_model(train_metrics=train_metrics)
    batch = {"user_id": tf.constant(["a", "b"]), "movie_id": tf.constant(["x", "y"])}
    history = model.fit(tf.data.Dataset.from_tensors(batch), verbose=0).history
    if train_metrics:
        assert history["factorized_top_k/top_3_categorical_accuracy"] == [1.0]
    else:  # not computed, so not logged
        assert not [k for k in history if k.startswith("factorized_top_k/")]
    assert history["loss_sum"] == pytest.approx(history["loss"])  # one step: the epoch's sum is its loss


BATCH_USERS, BATCH_ITEMS = ["a", "b", "a", "b"], ["x", "z", "x", "y"]


def batch_loss(model):
    features = {"user_id": tf.constant(BATCH_USERS), "movie_id": tf.constant(BATCH_ITEMS)}
    return model.compute_loss(features, training=True).numpy()


def batch_logits():
    q = Q[[USERS.index(u) + 1 for u in BATCH_USERS]]
    c = C[[ITEMS.index(i) + 1 for i in BATCH_ITEMS]]
    return q @ c.T


def test_logq_correction_subtracts_the_log_sampling_probability_of_each_candidate():
    counts = np.array([5, 1, 2])  # training counts of x, y, z
    model = tiny_model(counts=counts, logq_correction=True)
    q = (np.append(0, counts) + 1.0) / (counts.sum() + 4.0)  # row 0: ids outside the candidates
    log_q = np.log(q[[ITEMS.index(i) + 1 for i in BATCH_ITEMS]])
    expected = -np.trace(log_softmax(batch_logits() - log_q[None, :]))
    np.testing.assert_allclose(batch_loss(model), expected, rtol=1e-5)


def test_accidental_hits_are_removed_and_temperature_divides_the_logits():
    model = tiny_model(remove_accidental_hits=True, temperature=0.5)
    logits = batch_logits() / 0.5
    same = np.array([[i == j for j in BATCH_ITEMS] for i in BATCH_ITEMS])
    logits = np.where(same & ~np.eye(4, dtype=bool), logits - 1e9, logits)  # x at 0 and 2: not a negative of the other
    expected = -np.trace(log_softmax(logits))
    np.testing.assert_allclose(batch_loss(model), expected, rtol=1e-4)
    assert batch_loss(tiny_model(temperature=0.5)) > expected  # the copies of x counted as negatives


def test_cosine_towers_give_unit_vectors_and_the_loss_scores_their_cosines():
    model = tiny_model(cosine=True, temperature=0.25)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    out = model.query_tower(query_inputs(["b", "a"])).numpy()
    np.testing.assert_allclose(out, unit(Q[[2, 1]]), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(model.candidate_tower(tf.constant(["x", "y", "z"])).numpy(), axis=1),
                               1.0, rtol=1e-5)
    features = {"user_id": tf.constant(["a", "b"]), "movie_id": tf.constant(["x", "z"])}
    expected = -np.trace(log_softmax(unit(Q[[1, 2]]) @ unit(C[[1, 3]]).T / 0.25))
    np.testing.assert_allclose(model.compute_loss(features, training=True).numpy(), expected, rtol=1e-5)
    # Not the dot product's loss: the same embeddings, unscaled, score otherwise.
    assert abs(tiny_model(temperature=0.25).compute_loss(features, training=True).numpy() - expected) > 0.01


def test_hard_negatives_keep_only_the_highest_scoring_negatives():
    model = tiny_model(hard_negatives=1)
    logits = batch_logits()
    expected = 0.0
    for i in range(4):
        negatives = np.delete(logits[i], i)
        row = np.array([logits[i, i], negatives.max()])
        expected -= row[0] - np.log(np.exp(row).sum())
    np.testing.assert_allclose(batch_loss(model), expected, rtol=1e-5)


def test_logq_without_counts_is_refused():
    from scaleout.errors import ConfigError

    with pytest.raises(ConfigError, match="train_count"):
        tiny_model(logq_correction=True)


def test_the_popularity_prior_is_served_with_the_scores_and_training_scores_without_it(tmp_path):
    counts = np.array([5, 0, 40])  # training counts of x, y, z
    beta = 0.3
    model = tiny_model(counts=counts, logq_correction=True, remove_accidental_hits=True, popularity_prior=beta)
    # Training: the loss of the same towers without a prior, to the float (the query's prior column is 0 there).
    assert batch_loss(model) == batch_loss(tiny_model(counts=counts, logq_correction=True,
                                                      remove_accidental_hits=True))
    # Served: each tower one more column, and the dot product adds beta x log(1 + count); an unknown id's is 0.
    queries = model.query_tower(query_inputs(["a", "b", "nobody"])).numpy()
    candidates = model.candidate_tower(tf.constant(ITEMS + ["unknown"])).numpy()
    assert queries.shape == (3, 3) and candidates.shape == (4, 3)
    expected = Q[[1, 2, 0]] @ C[[1, 2, 3, 0]].T + beta * np.log1p(np.append(counts, 0))[None, :]
    np.testing.assert_allclose(queries @ candidates.T, expected, rtol=1e-6)
    # FactorizedTopK ranks with it: for user b, z (40 trainings) overtakes y (none) at top 1 through the prior.
    data = tf.data.Dataset.from_tensor_slices({"user_id": ["b"], "movie_id": ["z"]}).batch(1)
    assert (Q[2] @ C[3]) < (Q[2] @ C[2])  # without the prior y scores above z
    top1 = "factorized_top_k/top_1_categorical_accuracy"
    assert model.evaluate(data, return_dict=True, verbose=0)[top1] == 1.0
    assert tiny_model(counts=counts).evaluate(data, return_dict=True, verbose=0)[top1] == 0.0
    # Saved and loaded, the towers keep it.
    np.testing.assert_allclose(reloaded_scores(model, tmp_path), expected, rtol=1e-6)


def reloaded_scores(model, tmp_path):
    """The served scores of users a, b and one unknown against x, y, z and one unknown, from the model's towers
    saved and loaded again."""
    model.query_tower.save(tmp_path / "query")
    model.candidate_tower.save(tmp_path / "candidate")
    query = tf.keras.models.load_model(tmp_path / "query", compile=False)
    candidate = tf.keras.models.load_model(tmp_path / "candidate", compile=False)
    return query(query_inputs(["a", "b", "nobody"])).numpy() @ candidate(tf.constant(ITEMS + ["unknown"])).numpy().T


def test_a_popularity_prior_without_counts_or_below_zero_is_refused():
    from scaleout.errors import ConfigError

    with pytest.raises(ConfigError, match="popularity_prior needs the candidates' training counts"):
        tiny_model(popularity_prior=0.2)
    with pytest.raises(ConfigError, match="popularity_prior must be 0 \\(none\\) or more, got -0.1"):
        ModelConfig(popularity_prior=-0.1)


def test_l2_decays_only_the_embedding_rows_a_step_touches():
    """One SGD step with l2: the rows of the batch's users and items move by the loss's gradient plus
    2 x l2 x their value; every other row (the unknown-id rows, user "b", item "y") keeps its value."""
    l2, lr = 0.3, 0.1
    step = {"user_id": tf.constant(["a", "a"]), "movie_id": tf.constant(["x", "z"])}

    def one_step(**kwargs):
        model = tiny_model(optimizer="sgd", learning_rate=lr, **kwargs)
        logs = model.fit(tf.data.Dataset.from_tensors(step), verbose=0).history
        return (model.query_tower.get_layer("user_embedding").get_weights()[0],
                model.candidate_tower.get_layer("candidate_embedding").get_weights()[0], logs)

    q0, c0, plain = one_step()
    q1, c1, penalised = one_step(l2=l2)
    np.testing.assert_allclose(q1[1], q0[1] - lr * 2 * l2 * Q[1], rtol=1e-5)  # user "a"
    np.testing.assert_allclose(c1[[1, 3]], c0[[1, 3]] - lr * 2 * l2 * C[[1, 3]], rtol=1e-5)  # items "x", "z"
    np.testing.assert_array_equal(q1[[0, 2]], Q[[0, 2]])
    np.testing.assert_array_equal(c1[[0, 2]], C[[0, 2]])
    assert penalised["loss"] == pytest.approx(plain["loss"])  # the loss is the retrieval loss alone
    assert penalised["regularization_loss"][0] == pytest.approx(l2 * ((Q[1] ** 2).sum() + (C[[1, 3]] ** 2).sum()))


@pytest.mark.parametrize("train_metrics", [False, True])
def test_fit_reads_no_metric_at_the_end_of_an_epoch_and_evaluate_still_does(monkeypatch, train_metrics):
    """Keras reads every metric after an epoch's steps, for logs the step's own replace; under several workers
    each read is an all-reduce. fit leaves them unread (the step logs them itself with training metrics on)."""
    reads = []
    result = tf.keras.metrics.Mean.result  # FactorizedTopK's metrics, one Mean per k
    monkeypatch.setattr(tf.keras.metrics.Mean, "result", lambda self: reads.append(1) or result(self))
    model = tiny_model(train_metrics=train_metrics)
    step = {"user_id": tf.constant(["a", "b"]), "movie_id": tf.constant(["x", "z"])}
    logs = model.fit(tf.data.Dataset.from_tensors(step).repeat(2), epochs=2, verbose=0).history
    assert len(logs["loss"]) == 2
    assert bool(reads) == train_metrics  # traced into the step only when training metrics are on
    traced = len(reads)
    out = model.evaluate(tf.data.Dataset.from_tensors(step), return_dict=True, verbose=0)
    assert len(reads) > traced and 0.0 <= out["factorized_top_k/top_1_categorical_accuracy"] <= 1.0
    assert model.get_metrics_result()  # outside fit, the metrics as Keras gives them


def test_a_query_tower_saved_before_features_existed_is_still_called_with_ids_alone(tmp_path):
    from scaleout.train.towers import embed_users, id_tower

    tower = id_tower(USERS, 2, "query_tower")  # one string input, as towers were saved before side features
    tower.layers[1].set_weights([Q])
    tower.save(tmp_path / "query_tower")
    loaded = tf.keras.models.load_model(tmp_path / "query_tower", compile=False)
    assert len(loaded.inputs) == 1
    np.testing.assert_allclose(embed_users(loaded, ["b", "nobody"]), Q[[2, 0]])


@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("hits", [False, True])
def test_the_in_batch_softmax_is_tfrs_retrieval_s_loss_and_gradient(temperature, logq, hits):
    from scaleout.tfenv import tfrs
    from scaleout.train.model import in_batch_softmax

    rng = np.random.default_rng(7)
    query = tf.Variable(rng.standard_normal((6, 4)).astype(np.float32))
    candidate = tf.Variable(rng.standard_normal((9, 4)).astype(np.float32))  # 3 more negatives than queries
    extra = {}
    if logq:
        extra["candidate_sampling_probability"] = tf.constant(rng.uniform(1e-7, 0.5, 9).astype(np.float32))
    if hits:  # positives repeated in the batch and among the extra negatives
        extra["candidate_ids"] = tf.constant([1, 2, 1, 3, 2, 5, 1, 7, 5], tf.int64)
    task = tfrs.tasks.Retrieval(temperature=None if temperature == 1.0 else temperature, remove_accidental_hits=hits)
    results = []
    for loss_of in (lambda: task(query, candidate, compute_metrics=False, **extra),
                    lambda: in_batch_softmax(query, candidate, temperature, **extra)):
        with tf.GradientTape() as tape:
            loss = loss_of()
        results.append((float(loss), *[g.numpy() for g in tape.gradient(loss, [query, candidate])]))
    (want, *want_grads), (got, *got_grads) = results
    assert got == pytest.approx(want, rel=1e-5) and want > 1.0
    for w, g in zip(want_grads, got_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_init_stddev_draws_every_embedding_table_from_a_normal_of_that_deviation():
    import argparse

    from scaleout.cli.options import add_train_args, configs_from_args
    from scaleout.train import towers
    from scaleout.train.features import CodedFeature, FeatureTables

    users, items = [f"u{i}" for i in range(400)], [f"m{i}" for i in range(300)]
    age = CodedFeature("age", np.arange(401, dtype=np.int32)[:, None] % 50, size=49)

    def tables(stddev):
        cfg = ModelConfig(embedding_dim=64, history=3, history_table="separate", init_stddev=stddev)
        history = towers.item_embedding(cfg, items, "history_embedding")
        tower = towers.query_tower(cfg, users, FeatureTables(query=[age], history=np.zeros((401, 3), np.int32)),
                                   items, history_embedding=history)
        candidate = towers.candidate_tower(cfg, items)
        return {name: tower.get_layer(name).get_weights()[0]
                for name in ("user_embedding", "age_embedding", "history_embedding")} | {
            "candidate_embedding": candidate.get_layer("candidate_embedding").get_weights()[0]}

    for name, table in tables(0.01).items():
        # normal: tails past 2.5 sd (a uniform of that deviation ends at 1.73 sd); the smallest table, 3,200
        # values, has none there with probability 0.988^3200, about e^-40 (3 sd would be 2e-4: a flaky test)
        assert abs(table.std() - 0.01) < 0.001 and np.abs(table).max() > 0.025, name
    for name, table in tables(0.0).items():  # Keras' default, as every model before the option
        assert np.abs(table).max() <= 0.05 and abs(table.std() - 0.1 / 12 ** 0.5) < 0.002, name
    with pytest.raises(ConfigError, match="init_stddev must be"):
        ModelConfig(init_stddev=-0.1)
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    model_cfg, _ = configs_from_args(parser.parse_args(["--init-stddev", "0.005"]))
    assert model_cfg.init_stddev == 0.005
