"""How values travel in the packed all-reduce (scaleout.train.replicas): row ids as float parts that a sum over
the replicas' slots keeps exact, in float32 and in bfloat16; the logged values as three bfloat16 parts."""

import numpy as np
import pytest

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.tfenv import tf
from scaleout.config import ALLREDUCE_DTYPES
from scaleout.train.replicas import allreduce_dtype, join_floats, rows_from_floats, slot_rows, split_floats

ROWS = [0, 1, 255, 256, 4095, 4096, 65_535, 65_536, 1_682, 123_456_789, 2**31 - 1, 2**32 - 1]


PARTS = {"float32": 2, "bfloat16": 4}


@pytest.mark.parametrize("name", ALLREDUCE_DTYPES)  # every dtype the flag offers
def test_row_ids_travel_exact(name):
    dtype, parts = allreduce_dtype(name), PARTS[name]
    assert dtype.name == name
    rows = tf.constant(ROWS, tf.int64)
    sent = slot_rows(rows, dtype)  # one replica: its slot is the whole batch
    assert sent.dtype == dtype and sent.shape == [parts * len(ROWS)]
    # every part is an integer the dtype holds exactly, so a sum with other replicas' zeros keeps it
    assert np.array_equal(tf.cast(sent, tf.float64).numpy(), np.round(tf.cast(sent, tf.float64).numpy()))
    assert rows_from_floats(sent + tf.zeros_like(sent), dtype).numpy().tolist() == ROWS
    assert rows_from_floats(tf.cast(sent, tf.float32), dtype).numpy().tolist() == ROWS  # as all_reduce_step has it


def test_an_unknown_allreduce_dtype_is_refused_by_name():
    with pytest.raises(ValueError, match="'float16'.*float32, bfloat16"):
        allreduce_dtype("float16")


def test_a_bfloat16_part_is_too_coarse_for_a_float32_row_part():
    """Why bfloat16 needs its own parts: float32's 12-bit low part (up to 4095) would not survive it."""
    assert float(tf.cast(tf.constant(4095.0), tf.bfloat16)) != 4095.0


def test_logged_values_split_into_bfloat16_parts_join_back():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=200) * 10.0 ** rng.integers(-6, 7, size=200),
                        [0.0, 1.0, -7.123456, 65_504.0, 3.0e9, 1e-30]]).astype(np.float32)
    parts = split_floats(tf.constant(x))
    assert parts.dtype == tf.bfloat16 and parts.shape == [3, len(x)]
    joined = join_floats(parts).numpy()
    assert np.array_equal(joined, x), np.abs(joined - x).max()  # 3 x 8 bits hold float32's 24
    assert not np.allclose(tf.cast(parts[0], tf.float32).numpy(), x, rtol=2 ** -12)  # one part alone is coarse
