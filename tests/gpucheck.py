"""Exact NumPy answers for the GPU brute force's tests (tests/bench/test_gpu_paths.py, test_gpu_fused.py)."""

import numpy as np


def data(n=3000, dim=16, queries=70, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float32), rng.standard_normal((queries, dim)).astype(np.float32)


def exact(train, queries, k):
    scores = queries @ train.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, 1)


def check(rows, train, queries, dtype):
    """Same ids as NumPy in fp32; in bf16 (8 bits of mantissa) the k best to within bf16's rounding of the scores."""
    true_rows, true_scores = exact(train, queries, rows.shape[1])
    got = np.einsum("qd,qkd->qk", queries, train[rows])  # the returned rows' exact scores, in the order returned
    tol = (1e-6 if dtype == "float32" else 2 ** -6) * max(1.0, np.abs(true_scores).max())
    assert rows.shape == true_rows.shape
    assert (np.diff(got, axis=1) <= tol).all(), "not ordered best first"
    np.testing.assert_allclose(got, true_scores, rtol=0, atol=tol)
    if dtype == "float32":
        assert (rows == true_rows).all()
