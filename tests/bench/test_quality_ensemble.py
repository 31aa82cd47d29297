"""quality_ensemble.py's mixture of a model's scores with EASE's (--with-ease): each user's row standardised."""

import sys

import numpy as np

from benchscripts import BENCHMARKS, load


def standardised():
    sys.path.insert(0, str(BENCHMARKS))  # quality_ensemble imports quality_cuts and quality_search beside it
    try:
        return load("quality_ensemble").standardised
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_rows_are_standardised_and_a_row_of_one_value_gives_zeros():
    f = standardised()
    scores = np.array([[1.0, 2.0, 3.0, 6.0], [10.0, 0.0, 5.0, 5.0], [4.0, 4.0, 4.0, 4.0]], np.float32)
    z = f(scores)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=1), [1.0, 1.0, 0.0], atol=1e-6)
    assert np.isfinite(z).all()
    # Each row keeps its order, whatever its scale: a mixture weighs the two by W alone.
    assert (np.argsort(z[:2], axis=1) == np.argsort(scores[:2], axis=1)).all()
    np.testing.assert_allclose(f(scores[:2] * 1000 + 7), z[:2], atol=1e-5)


def test_the_weight_moves_the_ranking_from_the_model_to_ease():
    f = standardised()
    model = np.array([[3.0, 2.0, 1.0, 0.0]])  # one user: the model's order is items 0, 1, 2, 3
    ease = np.array([[0.0, 0.1, 0.2, 9.0]])  # EASE's is 3, 2, 1, 0, on another scale
    order = [list(np.argsort(-(f(model) + w * f(ease)), axis=1)[0]) for w in (0.0, 1.0, 100.0)]
    assert order[0] == [0, 1, 2, 3] and order[2] == [3, 2, 1, 0]
    assert order[1] == [0, 3, 1, 2]  # an even weight moves EASE's top item up, not to the top
