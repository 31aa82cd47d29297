"""The logits of queries against candidates, and the softmax losses over them, computed fast on CPUs.

The scores (``dot_scores``). TensorFlow's gradient of ``matmul(query, candidate, transpose_b=True)`` for the
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

The losses (``in_batch_softmax``, the model's; ``softmax_loss``). Large logits go a block of queries at a time,
the gradient computed with the loss, so that no [queries x candidates] tensor goes through memory whole
(``blocked_softmax_loss``): at the tutorial's batch of 8,192 the loss and both gradients took 311 ms against
535 whole on two threads here, and a fit of that batch in one process ran 1.29x and 1.69x as fast, in half the
peak memory (``benchmarks/blocked_loss.py``)."""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from scaleout.tfenv import tf

MIN_FLOAT = np.finfo(np.float32).min / 100.0  # TFRS's: what an accidental hit's logit gets added


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


BLOCK_BYTES = 4 << 20  # a block of logits: twice a core's L2 cache here (2 MiB each), in the shared L3
MIN_BLOCK_ROWS = 16  # fewer queries a block would run the loop more than the products
_whole = False  # whole_logits() sets it


def block_rows(candidates: int | tf.Tensor, block_bytes: int | None = None):
    """Queries per block of ``blocked_softmax_loss``: as many as make ``block_bytes`` of logits against
    ``candidates`` columns, at least ``MIN_BLOCK_ROWS`` (an int, or a scalar tensor where the number of
    candidates is known only when the step runs). Logits of that size or less are one block."""
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    known = candidates if isinstance(candidates, int) else tf.get_static_value(candidates)
    if known is not None:
        return max(MIN_BLOCK_ROWS, block_bytes // (4 * max(int(known), 1)))
    return tf.maximum(MIN_BLOCK_ROWS, block_bytes // (4 * tf.maximum(tf.cast(candidates, tf.int32), 1)))


def softmax_loss(query: tf.Tensor, candidate: tf.Tensor, positives: tf.Tensor, one_piece: Callable[[], tf.Tensor],
                 temperature: float = 1.0, bias: tf.Tensor | None = None,
                 candidate_ids: tf.Tensor | None = None) -> tf.Tensor:
    """The summed softmax cross-entropy of ``blocked_softmax_loss`` (see it for the arguments), in blocks of
    ``block_rows`` queries (logits of 4 MiB or less, the default preset's batch among them, in one), at any
    batch size, known when tracing or not; ``one_piece()``, the caller's computation of the same loss with the
    logits whole, within ``whole_logits()`` only. One block of the default preset's logits (1,024 x 1,024)
    measured 1.29x faster than the logits whole on one thread and 1.18x on two (``benchmarks/loss_against.py``):
    its accidental hits are found once, not through a mask of the logits' size, and its gradient comes with the
    value."""
    if _whole:
        return one_piece()
    candidates = candidate.shape[0] if candidate.shape[0] is not None else tf.shape(candidate)[0]
    return blocked_softmax_loss(query, candidate, positives, block_rows(candidates), temperature, bias,
                                candidate_ids)


def blocked_softmax_loss(query: tf.Tensor, candidate: tf.Tensor, positives: tf.Tensor, rows,
                         temperature: float = 1.0, bias: tf.Tensor | None = None,
                         candidate_ids: tf.Tensor | None = None) -> tf.Tensor:
    """Softmax cross-entropy of each query over the candidates, its positive at column ``positives[i]``,
    summed over the queries: the logits ``query @ candidate^T / temperature + bias`` (a candidate with the
    positive's id elsewhere in the row, given ``candidate_ids``, left out of the row's softmax, as TFRS's
    MIN_FLOAT added leaves it), computed ``rows`` queries at a time, with the gradient.

    A [queries x candidates] logits tensor at the tutorial's batch (8,192 x 8,192 floats, 256 MiB) and every
    tensor the loss and its gradient make of it go through memory, pass after pass: the products against a
    32-dimensional embedding do little arithmetic per float they write or read. Here each block's logits,
    softmax and both products stay in the core's cache, and the gradient is computed with the value (the
    loss is a scalar: its gradient is the upstream scalar times it), so no block is computed twice.
    Each block takes one exponential of its logits (the softmax is it over its sum, a division folded into the
    products' small sides). The accidental hits are
    found once for all blocks (``accidental_hits``) and taken out of each block's sum and both gradients
    where they lie, about 13 a query at ml-100k's skew, not through a comparison of every logit's id with the
    positive's and a select, two passes over each block (``benchmarks/loss_against.py`` measures each change
    against the commit before it). A hit's share is taken out of a sum that held it: where the hits far
    outweigh the rest of their row (candidates with the positive's id and a much larger logit), the rest
    keeps fewer of float32's digits. The model's hits have the positive's embedding (the candidate tower is
    a function of the id), and its logit but for mixed negatives' logQ, so a row's hits hold at most their
    count times the positive's share there. ``bias`` and ``candidate_ids`` get no gradient."""
    inv_t = 1.0 / temperature
    positives = tf.cast(positives, tf.int32)

    @tf.custom_gradient
    def loss(q, c):
        n, m, dim = tf.shape(q)[0], tf.shape(c)[0], q.shape[1]
        blocks = (n + rows - 1) // rows
        if candidate_ids is not None:
            hit_row, hit_col, first_hit = accidental_hits(candidate_ids, positives)
            hits_at = tf.cast(tf.stack([hit_row, hit_col], axis=1), tf.int64)  # (query, column)

        def block(i, total, query_gradients, candidate_gradient, hit_shares):
            start = i * rows
            end = tf.minimum(start + rows, n)
            qb, pb = q[start:end], positives[start:end]
            # The temperature divides the block's queries (rows x dim), not its logits (rows x candidates).
            s = tf.matmul(qb * inv_t if temperature != 1.0 else qb, c, transpose_b=True)
            if bias is not None:
                s = s + bias[tf.newaxis, :]
            own = tf.gather(s, pb, axis=1, batch_dims=1)  # each query's logit of its positive
            top = tf.reduce_max(s, axis=1)
            e = tf.exp(s - top[:, tf.newaxis])
            z = tf.reduce_sum(e, axis=1)
            if candidate_ids is not None:
                # The block's accidental hits, taken out of the sum: their shares read at their places, not
                # a mask over the block (two passes of its size, a fifth of the loss's time in a profile of
                # a tutorial-batch step). The sum holds the positive's own share, in exact arithmetic: a
                # floor against rounding.
                where = slice(first_hit[start], first_hit[end])
                rows_in_block = end - start
                at = hits_at[where] - tf.stack([tf.cast(start, tf.int64), 0])
                hit_e = tf.gather_nd(e, at)
                z = tf.maximum(z - tf.math.unsorted_segment_sum(hit_e, at[:, 0], rows_in_block), tf.exp(own - top))
                hit_share = hit_e / tf.gather(z, at[:, 0])
                hits_gradient = tf.sparse.sparse_dense_matmul(
                    tf.SparseTensor(at, hit_share, tf.cast(tf.stack([rows_in_block, m]), tf.int64)), c)
                hit_shares = hit_shares.write(i, hit_share)
            total += tf.reduce_sum(top + tf.math.log(z) - own)
            # The softmax is e / z (less the positives' one-hot below, and the hits' shares): each row's 1 / z
            # scales the products' small sides (rows x dim), not the block, which is never divided.
            scale = (1.0 / z)[:, tf.newaxis]
            query_gradient = tf.matmul(e, c) * scale
            if candidate_ids is not None:
                query_gradient -= hits_gradient
            return (i + 1, total, query_gradients.write(i, query_gradient),
                    candidate_gradient + tf.matmul(qb * scale, e, transpose_a=True), hit_shares)

        _, total, query_gradients, candidate_gradient, hit_shares = tf.while_loop(
            lambda i, *_: i < blocks, block,
            (tf.constant(0), tf.zeros([], q.dtype),
             tf.TensorArray(q.dtype, size=blocks, infer_shape=False, element_shape=tf.TensorShape([None, dim])),
             tf.zeros([dim, m], q.dtype),
             tf.TensorArray(q.dtype, size=blocks, infer_shape=False, element_shape=tf.TensorShape([None]))))
        dq = (query_gradients.concat() - tf.gather(c, positives)) * inv_t
        dc = tf.transpose(candidate_gradient) - tf.math.unsorted_segment_sum(q, positives, m)
        if candidate_ids is not None:  # the hits' shares, counted in the product above, taken out
            shares = tf.SparseTensor(hits_at, hit_shares.concat(), tf.cast(tf.stack([n, m]), tf.int64))
            dc -= tf.sparse.sparse_dense_matmul(shares, q, adjoint_a=True)
        return total, lambda upstream: (upstream * dq, upstream * dc * inv_t)

    return loss(query, candidate)


def accidental_hits(candidate_ids: tf.Tensor, positives: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Each query's accidental hits: the columns whose candidate has the id of the query's positive, its own
    column left out, as (query, column) pairs sorted by query, and each query's first pair (the queries' count
    plus one entries: query i's pairs are ``first[i]:first[i + 1]``). Found through the ids sorted once, not a
    [queries x candidates] comparison: each query's are a run of the sorted ids. As many pairs as the queries'
    positives have other copies among the candidates (about 13 a query in a batch of 8,192 at ml-100k's skew)."""
    order = tf.argsort(candidate_ids, stable=True)
    ids = tf.gather(candidate_ids, order)
    wanted = tf.gather(candidate_ids, positives)
    low = tf.searchsorted(ids, wanted, side="left", out_type=tf.int32)
    copies = tf.searchsorted(ids, wanted, side="right", out_type=tf.int32) - low  # the positive's own among them
    row = tf.repeat(tf.range(tf.shape(positives)[0]), copies)
    within = tf.range(tf.shape(row)[0]) - tf.gather(tf.cumsum(copies, exclusive=True), row)
    column = tf.gather(order, tf.gather(low, row) + within)
    others = tf.not_equal(column, tf.gather(positives, row))
    return (tf.boolean_mask(row, others), tf.boolean_mask(column, others),
            tf.concat([[0], tf.cumsum(copies - 1)], axis=0))


@contextlib.contextmanager
def whole_logits():
    """Within it, ``softmax_loss`` computes the logits in one piece at any size, as before blocks, for the
    benchmarks that compare the two (``benchmarks/blocked_loss.py``); a graph traced within it keeps that. Put
    back however the block ends."""
    global _whole
    before, _whole = _whole, True
    try:
        yield
    finally:
        _whole = before


def in_batch_softmax(query: tf.Tensor, candidate: tf.Tensor, temperature: float = 1.0,
                     candidate_sampling_probability: tf.Tensor | None = None,
                     candidate_ids: tf.Tensor | None = None) -> tf.Tensor:
    """``tfrs.tasks.Retrieval``'s loss without hard negatives: query i's positive is candidate i (the
    candidates may run past the queries: more negatives). The same value and gradient as Retrieval's, which
    builds a dense [queries x candidates] identity of labels, takes Keras' categorical cross-entropy over it and
    finds the accidental hits through that identity (tests/train/test_model.py holds them equal); here the
    positives are the diagonal and no label matrix is built.

    Temperature divides the logits; logQ correction subtracts log(p) (p clipped to [1e-6, 1]) from each
    candidate's column; with ``candidate_ids``, a candidate with the positive's id elsewhere in the row is
    pushed out (TFRS's MIN_FLOAT added), never the positive itself. Summed over the queries."""
    bias = None
    if candidate_sampling_probability is not None:
        bias = -tf.math.log(tf.clip_by_value(candidate_sampling_probability, 1e-6, 1.0))

    def one_piece():
        scores = model_scores(query, candidate)
        if temperature != 1.0:
            scores = scores / temperature
        if bias is not None:
            scores = scores + bias
        n = tf.shape(scores)[0]
        if candidate_ids is not None:
            same = tf.equal(candidate_ids[:n, tf.newaxis], candidate_ids[tf.newaxis, :])
            others = tf.not_equal(tf.range(n)[:, tf.newaxis], tf.range(tf.shape(scores)[1])[tf.newaxis, :])
            scores = scores + tf.cast(same & others, scores.dtype) * MIN_FLOAT
        # -log softmax of each query's positive: logsumexp of its row less its diagonal score (measured here:
        # 275k examples/s for loss and gradient at B = 1,024, against Retrieval's 245k and sparse
        # cross-entropy's 177k)
        return tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - tf.linalg.diag_part(scores))

    # A block of queries at a time (softmax_loss)
    return softmax_loss(query, candidate, tf.range(tf.shape(query)[0]), one_piece, temperature, bias, candidate_ids)
