"""Embedding tables' initial values, drawn without full-size temporaries.

Keras' random initializers draw a table eagerly, one operation at a time: the raw draw, then its scaling and
shift, each a new tensor the size of the table. The allocator scaleout runs TensorFlow with keeps freed memory for
TensorFlow's own later tensors (``scaleout.tfenv``), so a table of N bytes leaves its process about 3N larger,
memory that numpy and ScaNN cannot have: at 100M interactions (10M users and 1M items, 128 dimensions: 5.6 GB
of tables) about 11 GB more before the first step.
``TableInitializer`` draws the same values, bit for bit (the same stateless draw from the same seed, so the same
``tf.keras.utils.set_random_seed`` gives the same model as before), inside one ``tf.function`` whose seed is an
argument: TensorFlow then scales and shifts the draw in place and the table costs its own size
(``benchmarks/table_init_memory.py`` measures both).
"""

from __future__ import annotations

from scaleout.tfenv import tf


@tf.keras.utils.register_keras_serializable("scaleout")
class TableInitializer(tf.keras.initializers.Initializer):
    """Keras' ``RandomUniform()`` (uniform in [-0.05, 0.05]) with ``stddev`` 0, ``RandomNormal(stddev=stddev)``
    above 0: the same values, drawn in one graph so that no full-size temporary is kept."""

    def __init__(self, stddev: float = 0.0):
        self.stddev = float(stddev)
        self._keras = (tf.keras.initializers.RandomNormal(stddev=self.stddev) if self.stddev > 0
                       else tf.keras.initializers.RandomUniform())

    def __call__(self, shape, dtype=None, **kwargs):
        dtype = tf.as_dtype(dtype or tf.keras.backend.floatx())
        if kwargs or not dtype.is_floating:  # a partitioned or layout-bound variable, or integers: Keras' own way
            return self._keras(shape, dtype, **kwargs)
        # Keras' own seed for this draw (stateless: drawn once per initializer, from set_random_seed's generator),
        # passed in as a tensor: a constant seed would let TensorFlow fold the whole draw into a constant.
        seed = tf.constant(self._keras._random_generator.make_seed_for_stateless_op(), tf.int64)
        k, shape = self._keras, tf.constant([int(d) for d in shape], tf.int64)
        if self.stddev > 0:
            return _normal(shape, seed, tf.constant(k.mean, dtype), tf.constant(k.stddev, dtype))
        return _uniform(shape, seed, tf.constant(k.minval, dtype), tf.constant(k.maxval, dtype))

    def get_config(self):
        return {"stddev": self.stddev}


# One graph each (a dtype apiece): shape, seed and bounds are arguments, so a table of any shape reuses it.
@tf.function
def _uniform(shape, seed, minval, maxval):
    return tf.random.stateless_uniform(shape, seed, minval, maxval, minval.dtype)


@tf.function
def _normal(shape, seed, mean, stddev):
    return tf.random.stateless_normal(shape, seed, mean, stddev, mean.dtype)
