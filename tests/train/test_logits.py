"""dot_scores: TensorFlow's scores and gradients, with the candidates' gradient computed in another order."""

import numpy as np
import pytest

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.tfenv import tf
from scaleout.train.logits import dot_scores, matmul_scores, model_scores, tensorflow_gradient


def test_dot_scores_has_matmul_s_value_and_gradients():
    rng = np.random.default_rng(0)
    query = tf.constant(rng.normal(size=(6, 4)), tf.float32)
    candidate = tf.constant(rng.normal(size=(9, 4)), tf.float32)
    weights = tf.constant(rng.normal(size=(6, 9)), tf.float32)  # an upstream gradient that is not all ones

    def gradients(fn):
        with tf.GradientTape() as tape:
            tape.watch([query, candidate])
            scores = fn(query, candidate)
            loss = tf.reduce_sum(scores * weights)
        return scores, tape.gradient(loss, [query, candidate])

    ours, (our_q, our_c) = gradients(dot_scores)
    theirs, (their_q, their_c) = gradients(matmul_scores)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(our_q.numpy(), their_q.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(our_c.numpy(), their_c.numpy(), rtol=1e-5, atol=1e-5)
    # By hand: d(sum(W * Q C^T))/dC = W^T Q.
    np.testing.assert_allclose(our_c.numpy(), weights.numpy().T @ query.numpy(), rtol=1e-5, atol=1e-5)
    assert our_c.shape == candidate.shape and our_q.shape == query.shape


def candidates_gradient_ops() -> set[str]:
    """The op types of the candidates' gradient of the model's scores, traced now."""
    query, candidate = tf.ones([3, 2]), tf.ones([5, 2])

    @tf.function
    def gradient(q, c):
        with tf.GradientTape() as tape:
            tape.watch(c)
            scores = model_scores(q, c)
        return tape.gradient(scores, c)
    return {op.type for op in gradient.get_concrete_function(query, candidate).graph.get_operations()}


def test_the_model_scores_with_dot_scores_and_with_tensorflows_gradient_only_inside_the_switch():
    # dot_scores transposes the small product; TensorFlow's MatMul gradient reads the upstream transposed instead.
    assert "Transpose" in candidates_gradient_ops()
    with tensorflow_gradient():
        assert "Transpose" not in candidates_gradient_ops()
    assert "Transpose" in candidates_gradient_ops()
    try:
        with tensorflow_gradient():
            raise KeyError("in the middle")
    except KeyError:
        pass
    assert "Transpose" in candidates_gradient_ops()  # put back however the block ends


def plain_softmax_loss(query, candidate, positives, temperature=1.0, bias=None, ids=None):
    """The loss of blocked_softmax_loss in one piece, as in_batch_softmax computes it below its blocks."""
    scores = tf.matmul(query, candidate, transpose_b=True) / temperature
    if bias is not None:
        scores += bias[tf.newaxis, :]
    if ids is not None:
        same = tf.equal(tf.gather(ids, positives)[:, tf.newaxis], ids[tf.newaxis, :])
        others = tf.not_equal(positives[:, tf.newaxis], tf.range(tf.shape(scores)[1])[tf.newaxis, :])
        scores += tf.cast(same & others, scores.dtype) * -3.4e36
    return tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - tf.gather(scores, positives, axis=1, batch_dims=1))


@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("options", [False, True])
@pytest.mark.parametrize("diagonal", [True, False])
def test_the_blocked_softmax_loss_has_the_plain_loss_s_value_and_gradients(temperature, options, diagonal):
    from scaleout.train.logits import blocked_softmax_loss

    rng = np.random.default_rng(3)
    query = tf.constant(rng.normal(size=(10, 4)), tf.float32)
    candidate = tf.constant(rng.normal(size=(13, 4)), tf.float32)  # more candidates than queries
    positives = tf.range(10) if diagonal else tf.constant(rng.integers(0, 13, 10), tf.int32)
    bias = tf.constant(rng.normal(size=13), tf.float32) if options else None
    ids = tf.constant([1, 2, 1, 3, 2, 5, 1, 7, 5, 8, 9, 2, 4], tf.int64) if options else None  # repeated ids

    def value_and_gradients(fn):
        with tf.GradientTape() as tape:
            tape.watch([query, candidate])
            loss = 3.0 * fn()  # an upstream gradient of 3, not 1
        return float(loss), [g.numpy() for g in tape.gradient(loss, [query, candidate])]

    want, want_grads = value_and_gradients(lambda: plain_softmax_loss(query, candidate, positives, temperature,
                                                                      bias, ids))
    for rows in (4, 10, 32):  # blocks that do not divide the queries, one block, a block past them
        got, got_grads = value_and_gradients(lambda: blocked_softmax_loss(query, candidate, positives, rows,
                                                                          temperature, bias, ids))
        assert got == pytest.approx(want, rel=1e-5) and want > 10.0
        for w, g in zip(want_grads, got_grads):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_the_full_catalogue_softmax_in_blocks_is_sparse_cross_entropy():
    from scaleout.train.logits import blocked_softmax_loss

    rng = np.random.default_rng(4)
    query = tf.constant(rng.normal(size=(7, 3)), tf.float32)
    candidate = tf.constant(rng.normal(size=(20, 3)), tf.float32)
    labels = tf.constant([19, 0, 5, 5, 11, 3, 19], tf.int32)  # a column twice, the first and last columns
    want = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.matmul(query, candidate, transpose_b=True) / 0.5))
    assert float(blocked_softmax_loss(query, candidate, labels, 3, 0.5)) == pytest.approx(float(want), rel=1e-5)



@pytest.mark.parametrize("catalogue", [1, 3, 40, 10_000])  # every candidate one id .. hardly a repeat
def test_accidental_hits_are_the_pairs_a_comparison_of_every_id_finds(catalogue):
    from scaleout.train.logits import accidental_hits

    rng = np.random.default_rng(catalogue)
    ids = rng.integers(0, catalogue, 300)
    positives = rng.integers(0, 300, 120)  # any column, some twice
    row, column, first = (x.numpy() for x in accidental_hits(tf.constant(ids, tf.int64), tf.constant(positives,
                                                                                                      tf.int32)))
    same = (ids[positives][:, None] == ids[None, :]) & (positives[:, None] != np.arange(300)[None, :])
    want_row, want_column = np.nonzero(same)  # by query, then by column
    assert len(row) == len(want_row) == same.sum()
    np.testing.assert_array_equal(row, want_row)  # sorted by query
    got = sorted(zip(row.tolist(), column.tolist()))
    assert got == sorted(zip(want_row.tolist(), want_column.tolist()))
    np.testing.assert_array_equal(first, np.concatenate([[0], np.cumsum(same.sum(axis=1))]))


def test_a_batch_of_one_id_leaves_each_query_its_positive_alone():
    """Every other candidate a hit: each query's softmax is over its positive only, a loss and gradient of 0.
    The candidates of one id share its embedding, as the model's do (the candidate tower is a function of the
    id): the hits taken out of each row's sum are then exactly the copies of its positive's share."""
    from scaleout.train.logits import blocked_softmax_loss

    rng = np.random.default_rng(8)
    query = tf.constant(rng.normal(size=(12, 4)), tf.float32)
    candidate = tf.constant(np.repeat(rng.normal(size=(1, 4)), 12, axis=0), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([query, candidate])
        loss = blocked_softmax_loss(query, candidate, tf.range(12), 5, 0.5, None, tf.zeros([12], tf.int64))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    for gradient in tape.gradient(loss, [query, candidate]):
        np.testing.assert_allclose(gradient.numpy(), 0.0, atol=1e-5)  # float32 rounding of sums of 12

def test_block_rows_makes_blocks_of_4_mib_of_logits():
    from scaleout.train.logits import block_rows

    assert block_rows(1024) == 1024  # the default preset's batch: its 4 MiB of logits in one block
    assert block_rows(8192) == 128  # 4 MiB blocks of 8,192 columns
    assert block_rows(10, block_bytes=400) == 16  # at least 16 rows a block
    # Candidates known only when the step runs: the rows follow them.
    assert int(block_rows(tf.constant(8192))) == 128
    assert int(block_rows(tf.constant(4096))) == 256


@pytest.mark.parametrize("queries, candidates, known", [(300, 8192, True), (2048, 4096, False)])
def test_the_in_batch_softmax_of_large_logits_is_computed_in_blocks_with_the_same_loss(queries, candidates, known):
    from scaleout.train.logits import in_batch_softmax

    rng = np.random.default_rng(5)
    query = tf.constant(rng.normal(size=(queries, 8)) * 0.3, tf.float32)
    candidate = tf.constant(rng.normal(size=(candidates, 8)) * 0.3, tf.float32)

    # Candidates unknown when tracing (as the rows sent ahead are): decided by the queries, blocked by the rows.
    @tf.function(input_signature=[tf.TensorSpec([queries, 8]), tf.TensorSpec([candidates if known else None, 8])])
    def loss(q, c):
        return in_batch_softmax(q, c, 0.5)
    graph = loss.get_concrete_function().graph
    assert {"While", "StatelessWhile"} & {op.type for op in graph.get_operations()}
    want = plain_softmax_loss(query, candidate, tf.range(queries), 0.5)
    assert float(loss(query, candidate)) == pytest.approx(float(want), rel=1e-5)

    # Small logits are one block of the same loop: one code path at every size.
    assert loops(lambda q, c: in_batch_softmax(q, c, 0.5), tf.TensorSpec([64, 8]), tf.TensorSpec([None, 8]))


def loops(fn, *specs) -> bool:
    """Whether ``fn`` traced at ``specs`` runs a loop (the blocks')."""
    graph = tf.function(fn).get_concrete_function(*specs).graph
    return bool({"While", "StatelessWhile"} & {op.type for op in graph.get_operations()})


def test_whole_logits_turns_the_blocks_off_and_back_on():
    from scaleout.train.logits import in_batch_softmax, whole_logits

    specs = (tf.TensorSpec([8192, 4]), tf.TensorSpec([8192, 4]))
    with whole_logits():
        assert not loops(in_batch_softmax, *specs)
    assert loops(in_batch_softmax, *specs)
    with pytest.raises(KeyError):
        with whole_logits():
            raise KeyError("in the middle")
    assert loops(in_batch_softmax, *specs)  # put back however the block ends


@pytest.mark.parametrize("queries", [4000, 40])
def test_batches_of_a_size_unknown_when_tracing_are_blocked_by_the_candidates(queries):
    """One process's input has batches of no fixed size (an epoch's last is shorter): the blocks' rows follow the
    candidates, whose number is known when the step runs (4,000: 262 rows a block; 40 queries are one)."""
    from scaleout.train.logits import in_batch_softmax

    rng = np.random.default_rng(6)
    query = tf.constant(rng.normal(size=(queries, 8)) * 0.3, tf.float32)
    candidate = tf.constant(rng.normal(size=(4000, 8)) * 0.3, tf.float32)
    ids = tf.constant(rng.integers(0, 50, 4000), tf.int64)  # many repeats: accidental hits in every block

    @tf.function(input_signature=[tf.TensorSpec([None, 8]), tf.TensorSpec([None, 8])])
    def loss_and_gradients(q, c):
        with tf.GradientTape() as tape:
            tape.watch([q, c])
            loss = in_batch_softmax(q, c, 0.5, candidate_ids=ids)
        return [loss, *tape.gradient(loss, [q, c])]
    assert {"While", "StatelessWhile"} & {op.type for op in
                                          loss_and_gradients.get_concrete_function().graph.get_operations()}
    got = loss_and_gradients(query, candidate)
    with tf.GradientTape() as tape:
        tape.watch([query, candidate])
        want = plain_softmax_loss(query, candidate, tf.range(queries), 0.5, ids=ids)
    want_grads = tape.gradient(want, [query, candidate])
    assert float(got[0]) == pytest.approx(float(want), rel=1e-5)
    for g, w in zip(got[1:], want_grads):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-5)
