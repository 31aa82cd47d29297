"""dot_scores: TensorFlow's scores and gradients, with the candidates' gradient computed in another order."""

import numpy as np

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.tfenv import tf
from scaleout.train.logits import dot_scores, matmul_scores


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
