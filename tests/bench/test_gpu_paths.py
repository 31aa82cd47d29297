"""The GPU brute force's array-library paths, run on the CPU and checked against exact NumPy answers, so that the
first run on a GPU does not fail on an API detail.

JAX, PyTorch and TensorFlow run for real on their CPU devices (jax, jaxlib and torch's CPU build are in the test
extra). CuPy has no CPU device; its path runs with NumPy standing in for it (CuPy's array API mirrors NumPy's: the
tiling, merging and ordering are what is checked). The CUDA-graph path (PyTorch on a GPU) cannot run here; it is
refused by name on the CPU.
"""

import json
import types

import numpy as np
import pytest

from scaleout.bench import gpu
from scaleout.bench.gpu import GpuBruteForce

from gpucheck import check, data

K = 10


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


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_torch_path_on_the_cpu_agrees_with_numpy(small_tiles, dtype, batch):
    train, queries = data()
    index = GpuBruteForce("torch", train, dtype, on_cpu=True)
    assert index.device == "cpu" and str(index.x.device) == "cpu"
    # the CPU build has no fp32-output bf16 matmul: the scores are rounded to bf16, which check() allows for
    assert index.scores == ("float32" if dtype == "float32" else "bfloat16")
    check(index.search(queries[:batch], K), train, queries[:batch], dtype)


@pytest.mark.parametrize("n", [4096, 4096 + 37])  # whole groups, and a partial last one
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_the_torch_top_k_through_group_maxima_agrees_with_numpy(monkeypatch, n, batch, k):
    monkeypatch.setattr(gpu, "SMALL_SORT", 200)
    monkeypatch.setattr(gpu, "GROUPED_ABOVE", 200)
    monkeypatch.setattr(gpu, "GROUP", 8)  # groups of 21 columns (at most 200 groups), then of 8, ...
    group = -(-n // 200)
    train, queries = data(n=n, queries=batch)
    index = GpuBruteForce("torch", train, "float32", on_cpu=True)
    calls = []
    topk = index.torch.topk
    sort = index.torch.sort
    monkeypatch.setattr(index.torch, "topk", lambda *a, **kw: calls.append(("topk", *a[0].shape)) or topk(*a, **kw))
    monkeypatch.setattr(index.torch, "sort", lambda *a, **kw: calls.append(("sort", *a[0].shape)) or sort(*a, **kw))
    check(index.search(queries, k), train, queries, "float32")
    assert calls[0] == ("sort", batch, n // group), calls  # the group maxima sorted, not the whole row
    if k < 100:  # the best groups' k x 21 columns: 210 for k=10, more than SMALL_SORT: grouped again
        assert all(c[2] <= 200 for c in calls if c[0] == "sort") and not any(c[0] == "topk" for c in calls), calls
        assert len(calls) == (2 if k == 1 else 3), calls


def test_the_torch_top_k_through_group_maxima_finds_best_scores_crowded_into_one_group(monkeypatch):
    monkeypatch.setattr(gpu, "SMALL_SORT", 200)
    monkeypatch.setattr(gpu, "GROUPED_ABOVE", 200)
    monkeypatch.setattr(gpu, "GROUP", 32)
    train, queries = data(n=4096, queries=2)
    train[64:96] = queries[0] * np.linspace(3, 4, 32, dtype=np.float32)[:, None]  # query 0's 32 best all in group 2
    train[200] = queries[1] * 5  # query 1's best alone in group 6
    index = GpuBruteForce("torch", train, "float32", on_cpu=True)
    rows = index.search(queries, 40)
    assert set(rows[0, :32]) == set(range(64, 96)) and rows[1, 0] == 200
    check(rows, train, queries, "float32")


@pytest.fixture
def small_shapes(monkeypatch):
    """Every top-k way and both tile sizes take effect on a few thousand candidates."""
    for name, value in (("SMALL_SORT", 200), ("GROUPED_ABOVE", 200), ("GROUP", 8), ("BLOCK", 64),
                        ("SCORES_PER_TILE", 1 << 20), ("L2_TILES", (1500, 3000)), ("MAX_TILES", 64)):
        monkeypatch.setattr(gpu, name, value)


@pytest.mark.parametrize("n", [4096, 4096 + 37])  # whole blocks, and a partial last one
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("k", [1, 10, 40])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_plan_a_captured_search_may_choose_agrees_with_numpy(small_shapes, n, batch, k, dtype):
    train, queries = data(n=n, queries=batch)
    index = GpuBruteForce("torch", train, dtype, on_cpu=True)
    plans = index.plans(batch, k)
    assert plans[0] == index.plan == gpu.Plan()  # the eager search's plan is timed first
    forms = {p.one_row for p in plans}
    assert forms == ({"mv", "x@q", "q@x", "x@Q8"} if batch == 1 else {"mv"})
    triton = {"fused"} | ({"maxima", "maxima-tf32x3"} if dtype == "float32" else {"maxima"}) if batch > 1 else {"fused"}
    assert {p.top_k for p in plans} == {"auto", *gpu.TOP_K_WAYS, *triton}  # Triton's: tests/bench/test_gpu_fused.py
    # tiles of 1500 and 3000 scores: at most 64 of them here
    assert {p.tile for p in plans if p.top_k not in triton} == {None, 1500, 3000}
    for plan in plans:  # the Triton plans' answers: tests/bench/test_gpu_fused.py, on shapes its interpreter runs fast
        if plan.top_k not in triton:
            check(index.search_with(plan, queries, k), train, queries, dtype)


def test_the_blocks_top_k_keeps_the_best_of_every_block_then_of_those(small_shapes, monkeypatch):
    train, queries = data(n=64 * 64 + 5, queries=2)
    train[640:650] = queries[0] * np.linspace(3, 4, 10, dtype=np.float32)[:, None]  # query 0's 10 best in block 10
    train[-1] = queries[1] * 5  # query 1's best in the partial last block
    index = GpuBruteForce("torch", train, "float32", on_cpu=True)
    calls = []
    topk = index.torch.topk
    monkeypatch.setattr(index.torch, "topk", lambda *a, **kw: calls.append(tuple(a[0].shape)) or topk(*a, **kw))
    rows = index.search_with(gpu.Plan(top_k="blocks"), queries, 10)
    assert calls[0] == (2, 64, 64)  # 64 whole blocks of 64 in one launch
    assert set(rows[0]) == set(range(640, 650)) and rows[1, 0] == len(train) - 1
    check(rows, train, queries, "float32")


def test_tuning_keeps_the_fastest_plan_and_records_every_time(small_shapes):
    train, queries = data(n=4096, queries=1)
    index = GpuBruteForce("torch", train, "float32", on_cpu=True)
    plans = index.plans(1, K)
    times = {plan: 0.01 + 0.001 * i for i, plan in enumerate(plans)}
    times[plans[5]] = 0.001
    assert plans[5].one_row != "q@x"
    assert index.tune(1, K, times.__getitem__) == plans[5]
    t = index.tuned["1x10"]
    assert t["name"] == plans[5].name(1) and t["plan"] == plans[5]._asdict() and t["timed"] == "every plan"
    assert t["seconds"] == {p.name(1): times[p] for p in plans}  # names are distinct: one time per plan
    def broken(plan):
        if plan.one_row == "q@x":
            raise RuntimeError("no such kernel")
        return times[plan]
    assert index.tune(1, K, broken) == plans[5] != plans[5]._replace(one_row="q@x")
    assert index.tuned["1x10"]["failed"] == {p.name(1): "RuntimeError: no such kernel"
                                             for p in plans if p.one_row == "q@x"}
    slow = {plan: gpu.TUNE_SECONDS * 2 for plan in plans}
    assert index.tune(1, K, slow.__getitem__) == index.plan  # one search too long to time the others
    assert list(index.tuned["1x10"]["seconds"]) == [index.plan.name(1)]


def test_the_cuda_graph_path_is_refused_by_name_off_a_gpu():
    train, _ = data(n=100)
    with pytest.raises(NotImplementedError, match="PyTorch on a GPU only"):
        GpuBruteForce("torch", train, "float32", on_cpu=True).graphed(1, K)
    with pytest.raises(NotImplementedError, match="PyTorch on a GPU only"):
        GpuBruteForce("jax", train, "float32", on_cpu=True).graphed(1, K)


def test_one_tile_holding_fewer_candidates_than_k_is_merged_right(monkeypatch):
    monkeypatch.setattr(gpu, "SCORES_PER_TILE", 64 * 12)  # tiles of 12 rows: the last of 1,000 holds 4 < k
    train, queries = data(n=1000, queries=64)
    for backend in ("jax", "torch"):
        check(GpuBruteForce(backend, train, "float32", on_cpu=True).search(queries, K), train, queries, "float32")


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


def test_the_gpu_floors_are_the_roofline_of_reading_the_candidates_and_the_arithmetic():
    from benchscripts import load

    script = load("gpu_bruteforce")
    ceil = {"datasheet_bytes_per_s": 4.8e12, "read_bytes_per_s": 4.3e12, "float32_flops": 5e13, "bfloat16_flops": 7.5e14}
    fl = script.floors(1_000_000, 64, "float32", [1, 1024], ceil)
    assert fl["1"]["floor_s"] == pytest.approx(256e6 / 4.8e12)  # 53 us: the figure for 1M x 64 fp32
    assert fl["1024"]["floor_s"] == pytest.approx(2 * 1024 * 1e6 * 64 / 5e13)  # batched: the arithmetic bounds it
    assert script.floors(1_000_000, 64, "bfloat16", [1], ceil)["1"]["floor_s"] == pytest.approx(128e6 / 4.8e12)
    assert script.floors(1_000_000, 64, "float32", [1], {"read_bytes_per_s": 4.0e12})["1"]["floor_s"] == \
        pytest.approx(256e6 / 4.0e12)  # no datasheet figure: the measured read rate
    measured = {"latency": {"p50_ms": 0.16}, "qps": {"1": 6000, "1024": 195_000}}
    ratios = script.against_floor(measured, fl)
    assert ratios["p50"] == pytest.approx(0.16e-3 / (256e6 / 4.8e12)) and ratios["1024"] == pytest.approx(
        1024 / fl["1024"]["floor_s"] / 195_000)


def test_the_report_lists_each_graph_plan_chosen_beside_the_eager_plan(small_shapes):
    from scaleout.bench.gpu_report import _plans

    train, _ = data(n=4096, queries=1)
    index = GpuBruteForce("torch", train, "float32", on_cpu=True)
    plans = index.plans(1, K)
    times = {p: (0.0002 if p == plans[4] else 0.0006) for p in plans}
    times[plans[0]] = 0.0005
    index.tune(1, K, times.__getitem__)
    tuned = json.loads(json.dumps(index.tuned, sort_keys=True))  # as the benchmark's JSON holds it
    lines = _plans([{"dataset": "synthetic-4K-16", "dtype": "float32", "graph": {"plans": tuned}}])
    assert lines[-1] == f"| synthetic-4K-16 | float32 | 1 | 10 | {plans[4].name(1)} | 0.2 | 0.5 | {len(plans)} |"
    assert _plans([{"dataset": "d", "dtype": "float32", "graph": {}}]) == []  # runs from before plans were timed
    lines = _plans([{"dataset": "d", "dtype": "float32", "graph_error": "RuntimeError: no capture"}])
    assert lines == ["", "The CUDA graph path failed on d float32: RuntimeError: no capture."]
