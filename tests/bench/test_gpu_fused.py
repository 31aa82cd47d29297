"""The Triton searches of scaleout.bench.gpu_fused, run in Triton's interpreter on PyTorch CPU tensors and checked
against exact NumPy answers; and every kernel shape a captured search may choose, compiled for the H200's sm_90
by the Triton wheel's own compiler and ptxas (no GPU needed), without register spills."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from scaleout.bench import gpu, gpu_fused
from scaleout.bench.gpu import GpuBruteForce, Plan

from benchscripts import load
from gpucheck import check, data

REPO = Path(__file__).resolve().parents[2]


def tensors(train, queries, dtype):
    x, q = torch.from_numpy(train), torch.from_numpy(queries)
    return (x, q) if dtype == "float32" else (x.bfloat16(), q.bfloat16())


@pytest.fixture
def small(monkeypatch):
    """Batches of 16 queries a program: the interpreter runs a program's tensors through NumPy, op by op."""
    monkeypatch.setattr(gpu_fused, "BATCH_ROWS", 16)


class Spy:
    """Records the grid of every launch of a kernel."""

    def __init__(self, kernel, grids):
        self.kernel, self.grids = kernel, grids

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


def spied(monkeypatch):
    triton, score_top, select, group_max = gpu_fused._kernels(True)
    grids = {"score_top": [], "select": [], "group_max": []}
    monkeypatch.setattr(gpu_fused, "_kernels", lambda interpret: (
        triton, Spy(score_top, grids["score_top"]), Spy(select, grids["select"]), Spy(group_max, grids["group_max"])))
    return grids


@pytest.mark.parametrize("n, dim, batch, k, block", [
    (1000, 16, 1, 10, 64),  # one query, whole blocks
    (1000 + 37, 24, 1, 40, 64),  # a partial last block, dim not a power of two, k not one either
    (700, 16, 1, 1, 256),  # k = 1 (K = 2)
    (300 + 5, 16, 3, 10, 32),  # a batch under 16: one program of 16 queries, masked
    (600, 16, 20, 7, 16),  # two programs of queries, blocks of 2K (16 asked)
])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_fused_search_agrees_with_numpy(small, n, dim, batch, k, block, dtype):
    train, queries = data(n=n, dim=dim, queries=batch)
    x, q = tensors(train, queries, dtype)
    rows = gpu_fused.top_k(x, q, k, block, interpret=True)
    assert rows.dtype == torch.int64 and rows.shape == (batch, k)
    check(rows.numpy(), train, queries, dtype)


def test_the_fused_search_keeps_a_block_crowded_with_the_best_through_every_select_round(small, monkeypatch):
    monkeypatch.setattr(gpu_fused, "SELECT", 64)  # the select kernel keeps 16 of every 64 keys: several rounds
    train, queries = data(n=2000, queries=1)
    train[100:110] = queries[0] * np.linspace(3, 4, 10, dtype=np.float32)[:, None]  # the 10 best in block 3 of 32
    grids = spied(monkeypatch)
    rows = gpu_fused.top_k(*tensors(train, queries, "float32"), 10, 32, interpret=True).numpy()
    assert grids["score_top"] == [(63, 1)]  # 2,000 candidates in 63 blocks of 32: 1,008 keys
    assert grids["select"] == [(16, 1), (4, 1), (1, 1)]  # 1,008 -> 256 -> 64 -> the answer
    assert list(rows[0]) == list(range(109, 99, -1))
    check(rows, train, queries, "float32")


def test_the_fused_search_ranks_negative_scores_and_ties_as_numpy_does(small):
    """The 64-bit keys: a negative score's bits order backwards as integers until flipped; equal scores go
    lower row first (NumPy's stable sort)."""
    rng = np.random.default_rng(3)
    train = -np.abs(rng.standard_normal((500, 16))).astype(np.float32)  # every score below zero
    # Four rows with one score, the best (nearest zero) for any positive query. Powers of two and quarters, so
    # that every product and partial sum is exact in float32 and the four are equal in whatever order a matmul
    # sums them: the interpreter's NumPy matmul sums a block's columns in orders that differ by host (rows of
    # -1e-3 scored one ulp apart at columns 40 and 300 on one host, 2026-12-05, and tied on others).
    train[[5, 7, 40, 300]] = -(2.0 ** -10)
    queries = (rng.integers(1, 5, (2, 16)) / 4).astype(np.float32)
    for batch in (1, 2):
        rows = gpu_fused.top_k(*tensors(train, queries[:batch], "float32"), 10, 64, interpret=True).numpy()
        check(rows, train, queries[:batch], "float32")
    assert list(rows[0, :4]) == list(rows[1, :4]) == [5, 7, 40, 300]


def test_batches_beyond_the_keys_held_at_once_go_in_slices(small, monkeypatch):
    train, queries = data(n=300, queries=40)
    blocks, K = 300 // 64 + 1, 16
    monkeypatch.setattr(gpu_fused, "KEYS_AT_ONCE", blocks * K * 16)  # 16 queries' keys at once
    grids = spied(monkeypatch)
    rows = gpu_fused.top_k(*tensors(train, queries, "float32"), 10, 64, interpret=True).numpy()
    assert [g[1] for g in grids["score_top"]] == [1, 1, 1]  # 16 + 16 + 8 queries, a program of 16 each
    check(rows, train, queries, "float32")


@pytest.mark.parametrize("n, batch, k, block", [
    (1000, 20, 10, 64),  # whole blocks
    (1000 + 7, 3, 10, 64),  # a partial last block (its padding must not come back)
    (200, 17, 100, 16),  # k past the blocks (13): every block rescored
])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_block_maxima_search_agrees_with_numpy(small, n, batch, k, block, dtype):
    train, queries = data(n=n, dim=24, queries=batch)
    train[-1] = queries[0] * 5  # query 0's best in the last block: a partial block's padding repeats that row
    rows = gpu_fused.top_k_by_maxima(*tensors(train, queries, dtype), k, block, interpret=True).numpy()
    assert rows.shape == (batch, k) and (rows < n).all()
    check(rows, train, queries, dtype)


def test_the_block_maxima_search_finds_the_best_crowded_into_one_block_and_slices_its_gathers(small, monkeypatch):
    train, queries = data(n=1000, queries=40)
    train[640:650] = queries[0] * np.linspace(3, 4, 10, dtype=np.float32)[:, None]  # query 0's 10 best: block 10
    monkeypatch.setattr(gpu_fused, "GATHERED_AT_ONCE", 10 * 64 * 16 * 16)  # 16 queries' gathered blocks at once
    grids = spied(monkeypatch)
    rows = gpu_fused.top_k_by_maxima(*tensors(train, queries, "float32"), 10, 64, interpret=True).numpy()
    assert grids["group_max"] == [(16, 1), (16, 1), (16, 1)]  # 16 blocks of 64; 16 + 16 + 8 queries
    assert set(rows[0]) == set(range(640, 650))
    check(rows, train, queries, "float32")


def test_the_triton_searches_refuse_what_they_cannot_answer():
    x, q = tensors(*data(n=50, queries=2), "float32")
    for search in (gpu_fused.top_k, gpu_fused.top_k_by_maxima):
        with pytest.raises(ValueError, match="k = 51: expected 1..50"):
            search(x, q, 51, 64, interpret=True)
        with pytest.raises(ValueError, match=r"queries \(2, 16\) torch.bfloat16: expected \[b, 16\] torch.float32"):
            search(x, q.bfloat16(), 5, 64, interpret=True)


def test_the_interpreter_is_refused_by_name_where_triton_was_imported_compiled_first():
    code = textwrap.dedent("""
        import os, torch
        os.environ.pop("TRITON_INTERPRET", None)
        import triton.language  # its library defined compiled-only
        from scaleout.bench import gpu_fused
        try:
            gpu_fused.top_k(torch.zeros(4, 16), torch.zeros(1, 16), 1, 16, interpret=True)
        except RuntimeError as exc:
            print("REFUSED", exc)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "REFUSED Triton was imported in this process before its interpreter was asked for" in out.stdout, out.stderr


def test_a_captured_search_times_the_triton_plans_and_checks_every_plan_answer(small):
    train, queries = data(n=300, dim=64, queries=20)
    index = GpuBruteForce("torch", train, "float32", on_cpu=True)
    one = [p for p in index.plans(1, 10) if p.top_k not in ("auto", *gpu.TOP_K_WAYS)]
    assert one == [Plan(top_k="fused", tile=256), Plan(top_k="fused", tile=512)]  # 512 x 64: within the limit
    assert one[0].name(1) == "fused score and top k (Triton), blocks of 256"
    many = [p for p in index.plans(20, 10) if p.top_k not in ("auto", *gpu.TOP_K_WAYS)]
    assert [(p.top_k, p.tile) for p in many] == [("fused", 64), ("fused", 128), ("maxima", 64), ("maxima", 128),
                                                  ("maxima-tf32x3", 64), ("maxima-tf32x3", 128)]
    assert many[4].name(20) == ("block maxima (Triton, maxima-tf32x3), blocks of 64, best blocks rescored in fp32")
    wide = GpuBruteForce("torch", data(n=1000, dim=128)[0], "bfloat16", on_cpu=True)
    assert [(p.top_k, p.tile) for p in wide.plans(1, 100) if p.top_k == "fused"] == [("fused", 256)]  # 512 spills
    assert [(p.top_k, p.tile) for p in wide.plans(20, 100) if p.top_k != "auto" and p.top_k not in gpu.TOP_K_WAYS] \
        == [("fused", 256), ("maxima", 128), ("maxima", 256)]  # fused blocks of 2K; no tf32x3 in bf16
    q = torch.from_numpy(queries)
    reference = index.answer_scores(q, index._top_k_torch(q, 10, Plan().chunk(20, 10)))
    for plan in many:
        index.check_answer(index.answer_scores(q, torch.from_numpy(index.search_with(plan, queries, 10))), reference,
                           plan.name(20))
    wrong = torch.from_numpy(index.search_with(many[0], queries, 10)).flip(1)  # the right rows, worst first
    with pytest.raises(ValueError, match=r"fused score and top k \(Triton\), blocks of 64: wrong answer: query \d+'s"):
        index.check_answer(index.answer_scores(q, wrong), reference, many[0].name(20))


@pytest.mark.slow
def test_every_kernel_shape_a_captured_search_may_choose_compiles_for_sm_90_without_spills():
    """Compiled ahead of time, as the lent H200 would compile them on first use, and read by ptxas -v: a shape
    that spills registers runs slower than the kernel was measured at; one that fails to compile would have
    cost a run on the GPU."""
    code = textwrap.dedent("""
        import itertools, json, os, re, subprocess, tempfile
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from scaleout.bench import gpu_fused, gpu_fused_kernels as kernels
        ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        done = {}
        def compiled(fn, dt, constexprs, warps, out="i64"):
            names = [a for a in fn.arg_names if a not in constexprs]
            sig = {a: ("*" + (out if a == "out_ptr" else dt) if a.endswith("_ptr") else "i32") for a in names}
            sig.update({c: "constexpr" for c in constexprs})
            key = json.dumps([fn.__name__, dt, constexprs, warps], sort_keys=True)
            if key in done:
                return
            c = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                               options={"num_warps": warps})
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(c.asm["ptx"])
            info = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True,
                                  text=True, check=True).stderr
            done[key] = int(re.search(r"(\\d+) bytes spill stores", info).group(1))
        for dim, dtype, k in itertools.product((64, 128), ("float32", "bfloat16"), (10, 100)):
            dt, fp32 = ("fp32", True) if dtype == "float32" else ("bf16", False)
            for batch, blocks in ((1, gpu_fused.BLOCKS_ONE), (1024, gpu_fused.BLOCKS_BATCH)):
                for block in blocks:
                    shape = gpu_fused.config(batch, k, dim, block, fp32)
                    warps = shape.pop("num_warps")
                    compiled(kernels.score_top, dt, {**shape, "DECODE": False, "WIDEN": False}, warps)
                    K = shape["K"]
                    compiled(kernels.select, "i64", {"BW": max(gpu_fused.SELECT, 2 * K), "K": K, "DECODE": True},
                             gpu_fused.SELECT_WARPS)
            for way, precision in gpu_fused.MAXIMA_WAYS.items():
                if fp32 or way == "maxima":
                    for block in gpu_fused.MAXIMA_BLOCKS[dtype]:
                        compiled(kernels.group_max, dt, {"BM": gpu_fused.BATCH_ROWS, "BN": block, "BD": dim,
                                 "BK": 16 if fp32 else 32, "PRECISION": precision if fp32 else None, "WIDEN": False},
                                 gpu_fused.maxima_warps(block), out="fp32")
        print(json.dumps(done))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    spills = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(spills) >= 30  # every distinct shape above, once (38 on 2026-12-04)
    assert {key: s for key, s in spills.items() if s} == {}


def test_the_gpu_check_script_checks_both_triton_searches_and_fails_on_a_wrong_answer(tmp_path, monkeypatch, capsys):
    check_script = load("gpu_fused_check")
    out = tmp_path / "check.json"
    assert check_script.main(["--cpu-check", "--out", str(out)]) == 0
    checks = json.loads(out.read_text())["checks"]
    assert {(c["dtype"], c["batch"], c["way"]) for c in checks} == {
        ("float32", 1, "fused"), ("float32", 8, "fused"), ("float32", 8, "maxima"), ("float32", 8, "maxima-tf32x3"),
        ("bfloat16", 1, "fused"), ("bfloat16", 8, "fused"), ("bfloat16", 8, "maxima")}
    assert len(checks) == 14 and not any("error" in c for c in checks)
    right = gpu_fused.top_k_by_maxima
    monkeypatch.setattr(gpu_fused, "top_k_by_maxima", lambda *a, **kw: right(*a, **kw).flip(1))  # worst first
    assert check_script.main(["--cpu-check", "--shapes", "8:5", "--out", str(out)]) == 1
    failed = [c for c in json.loads(out.read_text())["checks"] if "error" in c]
    assert {c["way"] for c in failed} == {"maxima", "maxima-tf32x3"} and len(failed) == 6
    assert "block maxima (Triton, maxima), blocks of 64, best blocks rescored in fp32: wrong answer" \
        in failed[0]["error"]
    assert "FAILED ValueError: block maxima (Triton, maxima-tf32x3)" in capsys.readouterr().out
