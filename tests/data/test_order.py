import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scaleout.data.order import MAX_BYTES, vocabulary_order, words


def arrow_order(ids, counts) -> np.ndarray:
    table = pa.table({"id": ids, "count": counts})
    return pc.sort_indices(table, [("count", "descending"), ("id", "ascending")]).to_numpy()


def random_ids(rng, n, alphabet, max_bytes) -> list[str]:
    drawn = ("".join(rng.choice(alphabet, rng.integers(0, max_bytes + 1))) for _ in range(n))
    ids = {s for s in drawn if len(s.encode()) <= max_bytes}
    return sorted(ids, key=lambda _: rng.random())


@pytest.mark.parametrize("max_bytes", [1, 7, 8, 9, 16, 23, MAX_BYTES])
def test_the_order_is_arrows_for_ids_up_to_the_limit(max_bytes):
    rng = np.random.default_rng(max_bytes)
    # few letters, so ids share prefixes and one is often a prefix of another; é and 😀 are several bytes
    ids = pa.array(random_ids(rng, 3000, list("ab9Zé😀 "), max_bytes), pa.string())
    counts = pa.array(rng.integers(1, 5, len(ids)), pa.int64())  # many ties: the ids decide
    assert len(ids) >= 6 and words(ids) is not None
    np.testing.assert_array_equal(vocabulary_order(ids, counts), arrow_order(ids, counts))


def test_decimal_ids_sort_as_strings_not_numbers():
    ids = pa.array(["9", "10", "1", "100", "2"])
    counts = pa.array([1, 1, 1, 1, 1], pa.int64())
    assert ids.take(vocabulary_order(ids, counts)).to_pylist() == ["1", "10", "100", "2", "9"]


@pytest.mark.parametrize("ids, by_words", [
    (pa.array(["a" * (MAX_BYTES + 1), "a", "b"]), False),   # too long for the words: Arrow sorts
    (pa.array(["a\x00b", "a", "a\x00"]), False),               # a NUL byte: zero padding would tie it
    (pa.array(["x", "b", "a", "c"], pa.large_string()).slice(1), True),
    (pa.chunked_array([pa.array(["z", "y"]), pa.array(["x", "yy"])]), True),
])
def test_ids_that_do_not_fit_the_words_or_come_in_chunks_get_the_same_order(ids, by_words):
    assert (words(ids) is not None) == by_words
    counts = pa.array([2, 1] + [1] * (len(ids) - 2), pa.int64())
    np.testing.assert_array_equal(vocabulary_order(ids, counts), arrow_order(ids, counts))


def test_a_sliced_array_reads_its_own_strings():
    whole = pa.array(["zz", "b", "a", "c", "aa"])
    ids = whole.slice(1, 3)  # b, a, c: the buffers start at "zz"
    counts = pa.array([1, 1, 1], pa.int64())
    assert ids.take(vocabulary_order(ids, counts)).to_pylist() == ["a", "b", "c"]


def test_empty():
    assert vocabulary_order(pa.array([], pa.string()), pa.array([], pa.int64())).size == 0
