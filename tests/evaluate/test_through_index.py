"""The overlap of an approximate index's answers with BruteForce's, counted batch by batch as sets would."""

import numpy as np

from scaleout.evaluate.through_index import shared_per_row


def test_shared_ids_per_row_match_python_sets_with_repeats_and_padding():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30, (500, 10)).astype(str)  # repeats within a row, as padded answers have
    b = rng.integers(0, 30, (500, 10)).astype(str)
    b[:50] = a[:50][:, ::-1]  # rows with every id shared
    a[50:60] = ""  # rows of padding only
    want = [len(set(x) & set(y)) for x, y in zip(a, b)]
    np.testing.assert_array_equal(shared_per_row(a, b), want)
    assert max(want) == 10 and 0 in want  # both ends are exercised
    np.testing.assert_array_equal(shared_per_row(a.astype(object), b.astype(object)), want)
