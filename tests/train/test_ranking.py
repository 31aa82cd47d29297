"""RankTopK gives TFRS FactorizedTopK's figures without its top-k: the same values, across candidate blocks."""

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
    def step(q, p):
        metric.update_state(q, p)

    step(tf.constant([[1.0, 0.5, 0, 0]]), tf.constant([[0.0, 1.0, 0, 0]]))  # one candidate above: top-2, not top-1
    assert [float(v) for v in metric.result()] == [0.0, 1.0]
    metric.reset_states()
    assert [float(v) for v in metric.result()] == [0.0, 0.0]
