"""PairSet and IdCodes: --repeated-pairs first's memory of the pairs seen, exact whatever the hashes do."""

import numpy as np
import pyarrow as pa
import pytest

from scaleout.data.keyhash import string_hash64
from scaleout.data.pairs import IdCodes, PairSet


def test_pair_set_answers_first_new_keys_in_order():
    kept = PairSet()
    assert list(kept.first_new(np.array([5, 3, 5, 9, 3]), 10)) == [0, 1, 3]
    assert list(kept.first_new(np.array([9, 4, 1, 4, 5, 7]), 1)) == [1]  # at most one: 4; 1 and 7 stay new
    assert list(kept.keys) == [3, 4, 5, 9]
    assert list(kept.first_new(np.array([7, 1, 2]))) == [0, 1, 2]
    assert list(kept.keys) == [1, 2, 3, 4, 5, 7, 9]
    assert list(kept.first_new(np.array([9, 9, 1]))) == []
    assert list(kept.first_new(np.array([], np.int64))) == []


def _numbered(chunks):
    """The codes a dictionary gives: 0, 1, 2, ... in order of first sight."""
    book, out = {}, []
    for chunk in chunks:
        out.append(np.array([book.setdefault(i, len(book)) for i in chunk]))
    return out


def _check(codes: IdCodes, chunks):
    for chunk, expected in zip(chunks, _numbered(chunks)):
        got = codes.codes(pa.array(chunk, pa.string()))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
    assert codes.count == len({i for c in chunks for i in c})


def test_codes_number_ids_in_order_of_first_sight_across_chunks():
    rng = np.random.default_rng(3)
    words = ["u", "user-", "é", "日本", "x" * 30, ""]
    pool = [rng.choice(words) + str(i) for i in range(400)] + ["", " "]
    chunks = [list(rng.choice(pool, size)) for size in (1, 300, 0, 500, 200)]
    _check(IdCodes(), chunks)


@pytest.mark.parametrize("buckets", [1, 2, 7])
def test_codes_stay_exact_when_distinct_ids_share_a_hash(buckets):
    """A hash of only a few values: most distinct ids collide, within a chunk and with earlier chunks."""
    rng = np.random.default_rng(buckets)
    pool = [f"id{i}" for i in range(60)]
    chunks = [list(rng.choice(pool, size)) for size in (5, 40, 1, 80, 120)]
    codes = IdCodes(hash=lambda ids: string_hash64(ids) % np.uint64(buckets))
    _check(codes, chunks)
    assert len(codes.hashes) == buckets  # one entry a hash; the rest are looked up by their string
    assert len(codes.collided) == len({i for c in chunks for i in c}) - buckets


def test_null_ids_are_refused():
    with pytest.raises(ValueError, match="null"):
        IdCodes().codes(pa.array(["a", None]))


def test_pair_set_keeps_few_sorted_runs_and_answers_as_a_set_does():
    """Many chunks, keys repeated within and across them: the answers are a set's, and the keys stay in a
    logarithmic number of sorted, disjoint runs, each more than twice the next."""
    rng = np.random.default_rng(5)
    kept, seen = PairSet(), set()
    for size in rng.integers(0, 400, 60):
        keys = rng.integers(0, 6_000, size)
        expected = []
        for position, key in enumerate(keys.tolist()):
            if key not in seen:
                seen.add(key)
                expected.append(position)
        assert list(kept.first_new(keys)) == expected
        runs = kept.runs
        assert all(np.all(np.diff(run) > 0) for run in runs)
        assert all(len(a) > 2 * len(b) for a, b in zip(runs, runs[1:]))
    assert list(kept.keys) == sorted(seen) and len(kept) == len(seen)
    assert 1 < len(kept.runs) <= np.log2(len(seen)) + 1
