"""The rows of an embedding table read as rows, under a distribution strategy as in one process.

In one process ``tf.gather`` on a table variable is a sparse read (``ResourceGather``: the rows asked for).
Under ``MultiWorkerMirroredStrategy`` (the Ray workers) a table is a ``MirroredVariable``, which has no
``sparse_read``: ``tf.gather``, ``tf.nn.embedding_lookup`` (Keras' ``Embedding``) and the optimizer's row
updates read it whole (``ReadVariableOp``) and gather from that. A variable that has been updated by rows
(``ResourceScatterAdd``: Adagrad's sparse update) is in copy-on-read mode, where every whole read copies the
table: at 1M interactions (6,925 users and 26,744 items at 128 dimensions) those copies were 3.1 s of a 12.8 s
epoch on one Ray worker and 5.0 s of 18.8 s on each of two, and nothing in one process
(``scaleout train --profile-epoch``'s trace; ``benchmarks/ray_scaling.py``).

``read_rows`` reads the replica's own copy of the table (the component of the mirrored variable on its device,
which is an ordinary resource variable) by rows, so each step reads the rows it uses, as one process does. The
values and the gradient (rows: ``tf.IndexedSlices``) are the same either way. ``RowEmbedding`` is Keras'
``Embedding`` reading that way, ``RowAdagrad`` Keras' ``Adagrad`` whose sparse update reads its accumulator's
rows that way.
"""

from __future__ import annotations

from scaleout.tfenv import tf


def local_variable(variable):
    """The resource variable that holds ``variable``'s values for the running replica (or update): the variable
    itself outside a distribution strategy, its component on this device under one."""
    if isinstance(variable, tf.distribute.DistributedValues):
        # Private, and the one way to the component for the replica or update running: the distributed
        # variable's own reads go through it (its handle, read_value); tests/train/test_rows.py holds it.
        return variable._get_on_device_or_primary()
    return variable


def read_rows(table, rows) -> tf.Tensor:
    """``tf.gather(table, rows)`` as a sparse read of the replica's copy of ``table`` (a variable)."""
    local = local_variable(table)
    if not hasattr(local, "sparse_read"):
        return tf.gather(table, rows)
    return local.sparse_read(rows)


@tf.keras.utils.register_keras_serializable("scaleout")
class RowEmbedding(tf.keras.layers.Embedding):
    """Keras' ``Embedding`` (dense integer ids; the same weights, config and checkpoints) reading its table by
    rows under a distribution strategy too (``read_rows``)."""

    def call(self, inputs):
        if self.sparse or self._use_one_hot_matmul or isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            return super().call(inputs)
        if inputs.dtype not in (tf.int32, tf.int64):
            inputs = tf.cast(inputs, tf.int32)
        out = read_rows(self.embeddings, inputs)
        if self._dtype_policy.compute_dtype != self._dtype_policy.variable_dtype:
            out = tf.cast(out, self._dtype_policy.compute_dtype)
        return out


@tf.keras.utils.register_keras_serializable("scaleout")
class RowAdagrad(tf.keras.optimizers.Adagrad):
    """Keras' ``Adagrad`` (the same update, state and config), whose update of a table's rows reads its
    accumulator's rows (``read_rows``) rather than the whole accumulator under a distribution strategy."""

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        lr = tf.cast(self.learning_rate, variable.dtype)
        accumulator = self._accumulators[self._index_dict[self._var_key(variable)]]
        accumulator.scatter_add(tf.IndexedSlices(gradient.values * gradient.values, gradient.indices))
        denominator = tf.sqrt(read_rows(accumulator, gradient.indices) + self.epsilon)
        variable.scatter_add(tf.IndexedSlices(-lr * gradient.values / denominator, gradient.indices))
