"""TableInitializer: Keras' initial values, bit for bit, without Keras' full-size temporaries."""

import json
import subprocess
import sys

import numpy as np
import pytest

import scaleout  # noqa: F401  (before TensorFlow)
from scaleout.tfenv import tf
from scaleout.train.initializers import TableInitializer


def _tables(initializers, seed: int) -> list[np.ndarray]:
    tf.keras.utils.set_random_seed(seed)
    ids = tf.keras.Input(shape=(), dtype=tf.int64)
    out = []
    for rows, init in zip((3001, 17), initializers):
        layer = tf.keras.layers.Embedding(rows, 8, embeddings_initializer=init)
        layer(ids)
        out.append(layer.embeddings.numpy())
    return out


@pytest.mark.parametrize("stddev", [0.0, 0.25])
def test_the_same_values_as_keras_initializers_under_the_same_seed(stddev):
    keras = [tf.keras.initializers.RandomNormal(stddev=stddev) if stddev else "uniform" for _ in range(2)]
    theirs = _tables(keras, seed=5)
    ours = _tables([TableInitializer(stddev), TableInitializer(stddev)], seed=5)
    for a, b in zip(theirs, ours):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ours[0][:17], ours[1])  # each table its own draw
    if stddev:
        assert abs(ours[0].std() - stddev) < 0.01
    else:
        assert ours[0].min() >= -0.05 and ours[0].max() < 0.05 and ours[0].std() > 0.025
    assert not np.array_equal(_tables([TableInitializer(stddev)] * 2, seed=6)[0], ours[0])


def test_its_config_round_trips_through_a_saved_layer():
    layer = tf.keras.layers.Embedding(10, 4, embeddings_initializer=TableInitializer(0.5))
    config = tf.keras.layers.serialize(layer)
    again = tf.keras.layers.deserialize(json.loads(json.dumps(config)))
    assert isinstance(again.embeddings_initializer, TableInitializer)
    assert again.embeddings_initializer.stddev == 0.5


MEMORY = r"""
import json, sys
import scaleout
from scaleout.bench.measure import rss
from scaleout.tfenv import tf
from scaleout.train.initializers import TableInitializer

rows, dim = 500_000, 128  # 256 MB
init = TableInitializer(float(sys.argv[2])) if sys.argv[1] == "scaleout" else "uniform"
ids = tf.keras.Input(shape=(), dtype=tf.int64)
tf.keras.layers.Embedding(10, dim, embeddings_initializer=init)(ids)  # TensorFlow's own start-up costs first
before = rss()
tf.keras.layers.Embedding(rows, dim, embeddings_initializer=init)(ids)
print(json.dumps((rss() - before) / (rows * dim * 4)))
"""


def _tables_added(way: str, stddev: float = 0.0) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY, way, str(stddev)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_table_costs_its_process_about_its_own_size_where_keras_kept_three():
    """Measured in a fresh process each: the memory a 256 MB table's build leaves resident."""
    keras = _tables_added("keras")
    assert keras > 2.5  # the draw, its scaling and its shift, kept by TensorFlow's allocator
    assert _tables_added("scaleout") < 1.4
    assert _tables_added("scaleout", 0.1) < 1.4
