"""bucket_of: a key's bucket is a function of its bytes alone, whatever array it sits in."""

import numpy as np
import pyarrow as pa
import pytest

from scaleout.data.keyhash import bucket_of, string_hash64


def _ids(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["", "a", "é", "日本", "user_", "0" * 7, "x" * 8, "y" * 9, "z" * 17, "q" * 40]
    return [rng.choice(words) + str(rng.integers(0, 10**rng.integers(1, 12))) + rng.choice(words)
            for _ in range(n)]


def test_a_keys_bucket_does_not_depend_on_its_neighbours_offset_or_chunking():
    ids = _ids(3000)
    whole = bucket_of(pa.array(ids), 8)
    assert whole.dtype == np.uint16 and whole.max() < 256
    alone = np.array([bucket_of(pa.array([i]), 8)[0] for i in ids[:300]])
    np.testing.assert_array_equal(alone, whole[:300])
    shuffled = np.random.default_rng(1).permutation(len(ids))
    np.testing.assert_array_equal(bucket_of(pa.array([ids[i] for i in shuffled]), 8), whole[shuffled])
    sliced = pa.array(["pad", "pad2"] + ids).slice(2)  # a nonzero offset into the offsets and the data
    np.testing.assert_array_equal(bucket_of(sliced, 8), whole)
    chunked = pa.chunked_array([pa.array(ids[:1000]), pa.array(ids[1000:])])
    np.testing.assert_array_equal(bucket_of(chunked, 8), whole)
    np.testing.assert_array_equal(bucket_of(pa.array(ids, pa.large_string()), 8), whole)
    np.testing.assert_array_equal(bucket_of(pa.array([s.encode() for s in ids], pa.binary()), 8), whole)


def test_every_byte_window_counts_and_the_empty_string_is_a_key():
    a = bucket_of(pa.array(["", "a", "a\x00", "ab", "ba", "aaaaaaaaX", "Xaaaaaaaa", "abcdefgh", "abcdefgi"]), 16)
    assert len(set(a.tolist())) == 9  # 65,536 buckets: nine keys that differ anywhere, nine buckets
    assert bucket_of(pa.array([""]), 16)[0] == a[0]
    middle = ["m" * 12 + c + "m" * 12 for c in "abcdefgh"]  # differ only in the middle window
    assert len(set(bucket_of(pa.array(middle), 16).tolist())) == 8


def test_sequential_ids_spread_evenly():
    for ids in (pa.array(np.arange(200_000).astype(str)), pa.array(np.arange(10**9, 10**9 + 200_000))):
        counts = np.bincount(bucket_of(ids, 8), minlength=256)
        assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean(), counts


def test_integers_nulls_and_other_types():
    ints = bucket_of(pa.array([1, 2, None, 1], pa.int64()), 10)
    assert ints[0] == ints[3] and ints.max() < 1024
    strs = bucket_of(pa.array(["a", None, "a"]), 10)
    assert strs[0] == strs[2]
    assert bucket_of(pa.array([None, None], pa.string()), 10).tolist() == [strs[1]] * 2
    dates = pa.array([0, 1, 0], pa.date32())
    assert bucket_of(dates, 4)[0] == bucket_of(dates, 4)[2]
    assert len(bucket_of(pa.array([], pa.string()), 4)) == 0
    with pytest.raises(ValueError, match="bits"):
        bucket_of(pa.array(["a"]), 0)


def test_string_hash64_reads_every_byte_and_not_the_neighbours():
    ids = _ids(3000)
    whole = string_hash64(pa.array(ids))
    assert whole.dtype == np.uint64
    alone = np.array([string_hash64(pa.array([i]))[0] for i in ids[:300]])
    np.testing.assert_array_equal(alone, whole[:300])
    np.testing.assert_array_equal(string_hash64(pa.array(["pad", "pad2"] + ids).slice(2)), whole)
    np.testing.assert_array_equal(string_hash64(pa.array(ids, pa.large_string())), whole)
    np.testing.assert_array_equal(string_hash64(pa.array([s.encode() for s in ids], pa.binary())), whole)
    distinct = sorted(set(ids))
    assert len(set(string_hash64(pa.array(distinct)).tolist())) == len(distinct)
    # ids that differ in one byte anywhere, outside bucket_of's three windows too, or only in length
    one_byte = ["k" * 40] + ["k" * i + "j" + "k" * (39 - i) for i in range(40)] + ["k" * 39, "k" * 41, "", "\x00"]
    assert len(set(string_hash64(pa.array(one_byte)).tolist())) == len(one_byte)
    assert string_hash64(pa.array(["a", None, ""]))[1] == string_hash64(pa.array([""]))[0]
    assert len(string_hash64(pa.array([], pa.string()))) == 0
    with pytest.raises(TypeError, match="strings or binaries"):
        string_hash64(pa.array([1, 2]))
