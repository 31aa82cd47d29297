"""RankTopK gives TFRS FactorizedTopK's figures without its top-k: the same values, across candidate blocks, where
TFRS's are right; where a positive is a catalogue row or ties with others, the rank leaves its own row out and shares
the ties."""

import numpy as np
import pytest

from scaleout.tfenv import tf, tfrs
from scaleout.train.ranking import RankTopK

KS = (1, 5, 10, 50)


@pytest.mark.parametrize("block", [7, 64, 1000])  # padded blocks, exact blocks, one block larger than the catalogue
def test_rank_top_k_matches_tfrs_factorized_top_k(block):
    rng = np.random.default_rng(3)
    candidates = rng.standard_normal((64, 8)).astype(np.float32)
    queries = rng.standard_normal((300, 8)).astype(np.float32)
    # Near the catalogue's own vectors, not on them: a candidate equal to its positive ties with it within float
    # noise, which NumPy and TensorFlow break differently.
    positives = candidates[rng.integers(0, 64, 300)] + 0.01 * rng.standard_normal((300, 8)).astype(np.float32)
    positives[:20] = rng.standard_normal((20, 8))  # positives outside the catalogue, some scoring below zero
    positives[20:30] = 0.0  # scoring exactly 0, as the zero padding does
    theirs = tfrs.metrics.FactorizedTopK(candidates=tf.data.Dataset.from_tensor_slices(candidates).batch(16), ks=KS)
    ours = RankTopK(lambda: tf.constant(candidates), len(candidates), KS, block=block)
    for start in range(0, 300, 100):
        q, p = tf.constant(queries[start:start + 100]), tf.constant(positives[start:start + 100])
        theirs.update_state(q, p)
        ours.update_state(q, p)
    want = [float(v) for v in theirs.result()]
    np.testing.assert_allclose([float(v) for v in ours.result()], want)
    assert 0 < want[0] < want[-1] < 1  # the check is not vacuous
    scores = queries @ candidates.T
    above = (scores > (queries * positives).sum(axis=1, keepdims=True)).sum(axis=1)
    np.testing.assert_allclose(want, [np.mean(above < k) for k in KS], atol=1e-6)


def test_rank_top_k_runs_inside_a_traced_function_and_resets():
    candidates = tf.constant(np.eye(4, dtype=np.float32))
    metric = RankTopK(lambda: candidates, 4, (1, 2), block=3)
    @tf.function
    def step(q, p, rows):
        metric.update_state(q, p, true_candidate_ids=rows)

    # one candidate above: top-2, not top-1 (the positive is row 1, left out of its own rank)
    step(tf.constant([[1.0, 0.5, 0, 0]]), tf.constant([[0.0, 1.0, 0, 0]]), tf.constant([1]))
    assert [float(v) for v in metric.result()] == [0.0, 1.0]
    metric.reset_states()
    assert [float(v) for v in metric.result()] == [0.0, 0.0]


@pytest.mark.parametrize("block", [5, 64])
def test_a_positive_that_is_a_catalogue_row_is_not_ranked_against_itself(block):
    # The positive's score (an elementwise product) and its own row's (a matmul) round differently: for many
    # queries the own row scores above the positive by an ulp. Ranked without the row, the rank is the exact one.
    rng = np.random.default_rng(5)
    candidates = rng.standard_normal((40, 128)).astype(np.float32)
    queries = rng.standard_normal((400, 128)).astype(np.float32)
    rows = rng.integers(0, 40, 400)
    scores = (queries.astype(np.float64) @ candidates.T.astype(np.float64))
    exact = (scores > scores[np.arange(400), rows][:, None]).sum(axis=1)  # float64: no ties, no rounding question
    metric = RankTopK(lambda: tf.constant(candidates), 40, (1, 2, 5), block=block)
    metric.update_state(tf.constant(queries), tf.constant(candidates[rows]),
                        true_candidate_ids=tf.constant(np.append(rows, [7, 7])))  # Retrieval passes extra ids too
    np.testing.assert_allclose([float(v) for v in metric.result()], [np.mean(exact < k) for k in (1, 2, 5)])
    assert float(metric.result()[0]) > 0.01


def test_ties_are_shared_in_expectation_and_a_zero_query_scores_k_over_n():
    # Candidates 0-3 are one vector, 4 scores above it, 5 below: a positive on row 1 has 1 above and 3 tied.
    base = np.array([1.0, 0.0], np.float32)
    candidates = np.stack([base] * 4 + [np.array([2.0, 0.0]), np.array([-1.0, 0.0])]).astype(np.float32)
    metric = RankTopK(lambda: tf.constant(candidates), 6, (1, 2, 3, 5), block=4)
    metric.update_state(tf.constant([[1.0, 0.0]]), tf.constant([base]), true_candidate_ids=tf.constant([1]))
    np.testing.assert_allclose([float(v) for v in metric.result()], [0.0, 0.25, 0.5, 1.0])
    # a zero query ties every candidate: each positive is a hit at k with probability k / n (TFRS says 1.0)
    metric.reset_states()
    zero = tf.zeros([6, 2])
    metric.update_state(zero, tf.constant(candidates), true_candidate_ids=tf.range(6))
    np.testing.assert_allclose([float(v) for v in metric.result()], [1 / 6, 2 / 6, 3 / 6, 5 / 6], rtol=1e-6)
    # and one outside the catalogue (row -1) ties all six: k / 7
    metric.reset_states()
    metric.update_state(tf.zeros([1, 2]), tf.constant([[3.0, 3.0]]), true_candidate_ids=tf.constant([-1]))
    np.testing.assert_allclose([float(v) for v in metric.result()], [1 / 7, 2 / 7, 3 / 7, 5 / 7], rtol=1e-6)
