"""The GPU brute force's array-library paths, run on the CPU and checked against exact NumPy answers, so that the
first run on a GPU does not fail on an API detail.

JAX and TensorFlow run for real on their CPU devices (jax and jaxlib are in the test extra). CuPy has no CPU
device; its path runs with NumPy standing in for it (CuPy's array API mirrors NumPy's: the tiling, merging and
ordering are what is checked). PyTorch's path is not run here: its wheels (CUDA included) are too large for a
test dependency.
"""

import types

import numpy as np
import pytest

from scaleout.bench import gpu
from scaleout.bench.gpu import GpuBruteForce

K = 10


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
    tol = 1e-5 if dtype == "float32" else 2 ** -6 * np.abs(true_scores).max()
    assert rows.shape == true_rows.shape
    assert (np.diff(got, axis=1) <= tol).all(), "not ordered best first"
    np.testing.assert_allclose(got, true_scores, rtol=0, atol=tol)
    if dtype == "float32":
        assert (rows == true_rows).all()


@pytest.fixture
def small_tiles(monkeypatch):
    """Candidate tiles of a few hundred rows, so every search merges the top k of many tiles."""
    monkeypatch.setattr(gpu, "SCORES_PER_TILE", 20_000)


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_jax_path_on_the_cpu_agrees_with_numpy(small_tiles, dtype, batch):
    train, queries = data()
    index = GpuBruteForce("jax", train, dtype, on_cpu=True)
    assert index.device.platform == "cpu"
    check(index.search(queries[:batch], K), train, queries[:batch], dtype)


def test_one_tile_holding_fewer_candidates_than_k_is_merged_right(monkeypatch):
    monkeypatch.setattr(gpu, "SCORES_PER_TILE", 64 * 12)  # tiles of 12 rows: the last of 1,000 holds 4 < k
    train, queries = data(n=1000, queries=64)
    check(GpuBruteForce("jax", train, "float32", on_cpu=True).search(queries, K), train, queries, "float32")


def numpy_as_cupy():
    return types.SimpleNamespace(**{name: getattr(np, name) for name in (
        "argpartition", "take_along_axis", "broadcast_to", "arange", "concatenate", "argsort")},
        asarray=np.asarray, asnumpy=np.asarray)


@pytest.mark.parametrize("batch", [1, 64])
def test_the_cupy_path_with_numpy_standing_in_agrees_with_numpy(small_tiles, batch):
    train, queries = data()
    index = object.__new__(GpuBruteForce)
    index.backend, index.dtype, index.n, index.on_cpu = "cupy", "float32", len(train), True
    index.cp, index.x = numpy_as_cupy(), train
    check(index.search(queries[:batch], K), train, queries[:batch], "float32")
    with pytest.raises(NotImplementedError, match="CuPy has no CPU device"):
        GpuBruteForce("cupy", train, "float32", on_cpu=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_tensorflow_path_on_the_cpu_agrees_with_numpy(small_tiles, dtype):
    train, queries = data()
    check(GpuBruteForce("tensorflow", train, dtype, on_cpu=True).search(queries, K), train, queries, dtype)
