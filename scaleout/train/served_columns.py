"""What the served scores add to the towers' dot product, as more columns of each tower's output: the
popularity prior (``ModelConfig.popularity_prior``) and iALS's factors (``ModelConfig.ials_weight``). The
query's side of each is zero in training, so training's scores are the towers' own; the candidate's side is a
constant table by StringLookup row (scaleout.train.towers builds both).
"""

from __future__ import annotations

import numpy as np

from scaleout.tfenv import tf


@tf.keras.utils.register_keras_serializable("scaleout")
class ServingPrior(tf.keras.layers.Layer):
    """The query's side of the popularity prior (``ModelConfig.popularity_prior``): ``[b, dim]`` ->
    ``[b, dim + 1]``, the last column ``beta`` at evaluation and serving and 0 in training. Against the candidate
    tower's last column, log(1 + the candidate's training count), a dot product scores ``q . c + beta x log(1 +
    count)`` served, and ``q . c`` exactly in training (as dropout, by Keras' ``training`` flag)."""

    def __init__(self, beta: float, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, x, training=None):
        column = tf.fill(tf.stack([tf.shape(x)[0], 1]), tf.constant(0.0 if training else self.beta, x.dtype))
        return tf.concat([x, column], axis=1)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@tf.keras.utils.register_keras_serializable("scaleout")
class ServingFactors(tf.keras.layers.Layer):
    """The query's side of iALS's factors (``ModelConfig.ials_weight``): (``[b, dim]``, the user's factors ``[b,
    f]``) -> ``[b, dim + f]``, the factors times ``weight`` at evaluation and serving and zeros in training. Against
    the candidate tower's last ``f`` columns, the candidate's factors, a dot product scores ``q . c + weight x u .
    v`` served and ``q . c`` exactly in training."""

    def __init__(self, weight: float, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs, training=None):
        x, factors = inputs
        return tf.concat([x, tf.cast(factors, x.dtype) * (0.0 if training else self.weight)], axis=1)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """``[candidates + 1, 1]`` float32: log(1 + each candidate's training count) by StringLookup row (row 0, an
    id outside the candidates: 0), the candidate tower's last column under a popularity prior."""
    return np.log1p(np.concatenate([[0.0], np.asarray(counts, np.float64)]))[:, None].astype(np.float32)
