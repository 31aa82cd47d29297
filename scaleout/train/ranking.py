"""TFRS's FactorizedTopK metric over every candidate, computed from each positive's rank instead of a top-k.

``tfrs.metrics.FactorizedTopK`` with a dataset of candidates streams it
through a ``Streaming`` layer for every batch of queries: per candidate block
a matmul, a ``top_k`` of k = 100 and a merge with the running top 100. The
``top_k`` is most of the cost (0.9 s a batch of 4,096 queries against 26,744
candidates here, 83 s for 200,000 test rows). Whether the true candidate is in
the top k depends only on how many candidates score above it, so
``RankTopK`` counts them, block by block: one matmul and one comparison per
block, no sort. The names are FactorizedTopK's
(``factorized_top_k/top_{k}_categorical_accuracy``); the values differ from
its score-based ones in two ways, both where it is wrong:

- given each positive's row (``true_candidate_ids``, as the model passes),
  the positive's own row is not counted against it. TFRS scores the positive
  with an elementwise product and the catalogue with a matmul, whose rounding
  puts the positive's own row above it for 32% of the queries of
  benchmarks/rank_top_k.py: a top-1 hit then reads as a miss (top-1 0.311
  there, against 0.453);
- candidates scoring exactly as the positive are ranked around it in a random
  order, in expectation (a hit at k with probability clip((k - above) /
  (ties + 1), 0, 1)), as scaleout.evaluate.protocols ranks them. TFRS counts
  every tie in the positive's favour, so a model whose queries are all zero
  scores 1.0 at every k; here k / n.
"""

from __future__ import annotations

from typing import Callable, Sequence

from scaleout.tfenv import tf, tfrs

# Candidates scored at once: [queries x RANK_BLOCK] floats (4,096 queries: 128 MiB).
RANK_BLOCK = 8192


class RankTopK(tfrs.metrics.Factorized):
    """Top-k accuracy at each of ``ks``: the share of queries whose positive has fewer than k candidates scoring
    above it. ``embed_candidates`` returns every candidate's embedding ``[n, dim]`` (called once per batch, so the
    metric follows the tower as it trains); it is a function so that the tower is not tracked twice."""

    def __init__(self, embed_candidates: Callable[[], tf.Tensor], n_candidates: int, ks: Sequence[int],
                 block: int = RANK_BLOCK, name: str = "factorized_top_k"):
        super().__init__(name=name)
        self._embed = embed_candidates
        self._n = int(n_candidates)
        self._block = max(1, min(int(block), self._n))
        self._ks = tuple(ks)
        self._top_k_metrics = [tf.keras.metrics.Mean(name=f"{self.name}/top_{k}_categorical_accuracy")
                               for k in self._ks]

    def ranks(self, queries: tf.Tensor, positive: tf.Tensor, own: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(``[queries]`` int32: how many candidates score strictly above each query's ``positive`` score, how
        many score exactly as it does), the positive's own row (``own``; -1: none) left out of both."""
        everything = self._embed()
        blocks = -(-self._n // self._block)
        padding = blocks * self._block - self._n
        # Zero rows score exactly 0: above a negative positive, tied with a zero one; taken off again below.
        padded = tf.pad(everything, [[0, padding], [0, 0]])
        blocked = tf.reshape(padded, [blocks, self._block, -1])
        threshold = positive[:, tf.newaxis]
        own = own[:, tf.newaxis]

        def count(i, above, tied):
            scores = tf.matmul(queries, blocked[i], transpose_b=True)
            above += tf.reduce_sum(tf.cast(scores > threshold, tf.int32), axis=1)
            tied += tf.reduce_sum(tf.cast(tf.equal(scores, threshold), tf.int32), axis=1)
            # The own row, where it is in this block, counted above or tied: taken off again.
            column = own - i * self._block
            here = (column >= 0) & (column < self._block)
            score = tf.gather(scores, tf.clip_by_value(column, 0, self._block - 1), batch_dims=1)
            above -= tf.cast(here & (score > threshold), tf.int32)[:, 0]
            tied -= tf.cast(here & tf.equal(score, threshold), tf.int32)[:, 0]
            return i + 1, above, tied

        zeros = tf.zeros_like(positive, dtype=tf.int32)
        _, above, tied = tf.while_loop(lambda i, *_: i < blocks, count, (tf.constant(0), zeros, zeros))
        return (above - padding * tf.cast(positive < 0.0, tf.int32),
                tied - padding * tf.cast(tf.equal(positive, 0.0), tf.int32))

    def update_state(self, query_embeddings: tf.Tensor, true_candidate_embeddings: tf.Tensor,
                     true_candidate_ids: tf.Tensor | None = None, sample_weight: tf.Tensor | None = None):
        """``true_candidate_ids``: each positive's row among the candidates (int; -1 for one outside them), for
        as many queries as there are (Retrieval passes every candidate's: the rest are ignored); without it no
        row is left out."""
        positive = tf.reduce_sum(query_embeddings * true_candidate_embeddings, axis=1)
        n = tf.shape(positive)[0]
        own = tf.fill([n], -1) if true_candidate_ids is None else tf.cast(true_candidate_ids[:n], tf.int32)
        above, tied = self.ranks(query_embeddings, positive, own)
        above, tied = tf.cast(above, tf.float32), tf.cast(tied, tf.float32)
        return tf.group([metric.update_state(tf.clip_by_value((k - above) / (tied + 1.0), 0.0, 1.0), sample_weight)
                         for k, metric in zip(self._ks, self._top_k_metrics)])
