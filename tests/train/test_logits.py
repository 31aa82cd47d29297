"""dot_scores: TensorFlow's scores and gradients, with the candidates' gradient computed in another order."""

import numpy as np

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
