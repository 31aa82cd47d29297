"""The dot-product scores of queries against candidates, with a gradient for the candidates that is fast on CPUs.

TensorFlow's gradient of ``matmul(query, candidate, transpose_b=True)`` for the
candidates is ``matmul(upstream, query, transpose_a=True)``: the [queries x
candidates] upstream gradient read transposed. On this machine's CPUs that one
product took 8.2 ms at 1,024 x 1,024 x 32 on one thread, where the same numbers
computed as ``transpose(matmul(query, upstream, transpose_a=True))`` (the small
[queries x dim] operand read transposed, then a [dim x candidates] result
transposed) took 4.0 ms; 5.1 ms against 2.9 on two threads, and 4.6 against
2.2 at one of 2 Ray workers' share (512 queries x 1,024 candidates); the
forward product took 2.9 ms (``benchmarks/logits_gradient.py``). It was the
largest op of a training step (a third of a one-thread step's op time, in
TensorFlow's profiler), so ``dot_scores`` computes the scores as before and
their gradient the second way: the same products, summed in another order.
"""

from __future__ import annotations

import contextlib

from scaleout.tfenv import tf


@tf.custom_gradient
def dot_scores(query: tf.Tensor, candidate: tf.Tensor):
    """``query @ candidate^T``: ``[queries, dim] x [candidates, dim] -> [queries, candidates]``; the candidates'
    gradient as ``(query^T @ upstream)^T`` (see the module docstring)."""

    def gradient(upstream):
        return (tf.matmul(upstream, candidate),
                tf.transpose(tf.matmul(query, upstream, transpose_a=True)))

    return tf.matmul(query, candidate, transpose_b=True), gradient


def matmul_scores(query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
    """The same scores as a plain ``matmul``, with TensorFlow's own gradient (``upstream^T @ query`` for the
    candidates): what ``dot_scores`` replaced, kept for the tests and benchmarks that compare the two."""
    return tf.matmul(query, candidate, transpose_b=True)


_scores = dot_scores  # what model_scores computes with; tensorflow_gradient() switches it


def model_scores(query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
    """The training losses' scores (scaleout.train.model): ``dot_scores``, or inside ``tensorflow_gradient()``
    ``matmul_scores``."""
    return _scores(query, candidate)


@contextlib.contextmanager
def tensorflow_gradient():
    """Within it, ``model_scores`` is ``matmul_scores``, for the benchmarks that compare the two gradients
    (``benchmarks/logits_gradient.py``, ``train_throughput.py``): a graph traced within it keeps that gradient
    after. Put back however the block ends."""
    global _scores
    before, _scores = _scores, matmul_scores
    try:
        yield
    finally:
        _scores = before
