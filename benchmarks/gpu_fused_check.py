"""The Triton searches (scaleout.bench.gpu_fused) on a GPU: right answers first, then their kernels' time.

    python benchmarks/gpu_fused_check.py [--size 1M-64]          # on a GPU machine, before gpu_half.sh
    python benchmarks/gpu_fused_check.py --cpu-check             # Triton's interpreter on the CPU: the code only

For fp32 and bf16, one query and batches of 64, 1,024 and 16,384, k = 10 and 100, every Triton plan a captured
search may choose (GpuBruteForce.plans): the fused search's blocks, and for batches the block-maxima search's
ways and blocks. Each plan's answer is checked against an exact PyTorch search's (matrix product and
torch.topk; GpuBruteForce.check_answer, the captured search's own gate), then its median time over 20 eager
searches (CUDA events: kernels and launches, no host copies) is printed beside the bandwidth floor (the
candidates' bytes at the datasheet's 4.8 TB/s) and the PyTorch search's time. Prints a table and writes
fused-check.json (under $OUT where the device tool sets it). Exits 1 if any answer is wrong or a kernel fails
to compile, after trying every plan: a first check of a run on a lent GPU, costing seconds, before the long one.

--cpu-check runs the same checks in Triton's interpreter on PyTorch CPU tensors, without the times (default
300 candidates of 20 dimensions, shapes 1:10 and 8:5, in seconds; the interpreter runs a batch's fused search
about a minute at 64 x 2,000): tests/bench/test_gpu_fused.py runs it that way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaleout.bench import gpu_fused  # noqa: E402  (before triton: the interpreter is chosen at its import)
from scaleout.bench.datasets import parse_size, synthetic_vectors  # noqa: E402
from scaleout.bench.gpu import GpuBruteForce, Plan  # noqa: E402
from scaleout.bench.gpu_devices import event_seconds  # noqa: E402

BANDWIDTH = 4.8e12  # H200 datasheet, bytes/s
SHAPES = ((1, 10), (1, 100), (64, 10), (1024, 10), (1024, 100), (16384, 10))  # (batch, k)


def median_seconds(torch, fn, repeats: int) -> float:
    times = sorted(event_seconds(torch, fn, repeats))
    return times[len(times) // 2]


def triton_plans(index: GpuBruteForce, batch: int, k: int) -> list[Plan]:
    return [p for p in index.plans(batch, k) if p.top_k == "fused" or p.top_k in gpu_fused.MAXIMA_WAYS]


def check(torch, index: GpuBruteForce, plan: Plan, q, k: int, exact, repeats: int) -> dict:
    """One plan: its answer checked against ``exact`` (scores of the exact search's rows), then its time."""
    rec = {"way": plan.top_k, "block": plan.tile, "plan": plan.name(len(q))}
    if plan.top_k == "fused":
        rec["shape"] = gpu_fused.config(len(q), k, q.shape[1], plan.tile, index.dtype == "float32")
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            got = index._top_k_torch(q, k, None, plan)
            if not index.on_cpu:
                torch.cuda.synchronize()
            rec["first_call_s"] = time.perf_counter() - t0  # the compile, mostly
            index.check_answer(index.answer_scores(q, got), exact, rec["plan"])
            if repeats:
                rec["seconds"] = median_seconds(torch, lambda: index._top_k_torch(q, k, None, plan), repeats)
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:600]
        rec["trace"] = traceback.format_exc()[-1500:]
    return rec


def shape(text: str) -> tuple[int, int]:
    batch, _, k = text.partition(":")
    return int(batch), int(k)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", help="synthetic <n>-<dim> (default 1M-64; 300-20 with --cpu-check)")
    parser.add_argument("--shapes", nargs="+", type=shape, metavar="BATCH:K",
                        help="default: " + " ".join(f"{b}:{k}" for b, k in SHAPES) + "; 1:10 8:5 with --cpu-check")
    parser.add_argument("--cpu-check", action="store_true", help="Triton's interpreter on the CPU, answers only "
                        "(a check of the code, not a result)")
    parser.add_argument("--out", default="fused-check.json")
    a = parser.parse_args(argv)
    size = a.size or ("300-20" if a.cpu_check else "1M-64")
    shapes = a.shapes or ([(1, 10), (8, 5)] if a.cpu_check else list(SHAPES))
    repeats = 0 if a.cpu_check else 20
    import torch

    if gpu_fused.missing() or not (a.cpu_check or torch.cuda.is_available()):
        print(f"no GPU or no Triton here ({gpu_fused.missing() or 'torch.cuda.is_available() is False'}); "
              "nothing was checked")
        return 0
    n, dim = (parse_size(x) if i == 0 else int(x) for i, x in enumerate(size.split("-")))
    train, queries = synthetic_vectors(n, dim, max(b for b, _ in shapes))
    rows_out, bad = [], 0
    for dtype in ("float32", "bfloat16"):
        index = GpuBruteForce("torch", train, dtype, on_cpu=a.cpu_check)
        floor = n * dim * (4 if dtype == "float32" else 2) / BANDWIDTH
        for batch, k in shapes:
            q = torch.from_numpy(queries[:batch]).to(index.device).to(index.dt)
            exact_plan = Plan()

            def exact_search():
                return index._top_k_torch(q, k, exact_plan.chunk(batch, k), exact_plan)
            with torch.inference_mode():
                exact = index.answer_scores(q, exact_search())
                torch_s = median_seconds(torch, exact_search, repeats) if repeats else None
            for plan in triton_plans(index, batch, k):
                rec = {"dtype": dtype, "batch": batch, "k": k, **check(torch, index, plan, q, k, exact, repeats)}
                head = f"{dtype:8} b={batch:<5} k={k:<3} {plan.top_k:13} block {plan.tile:<4}"
                if "error" in rec:
                    bad += 1
                    print(f"{head} FAILED {rec['error']}", flush=True)
                elif repeats:
                    rec.update(torch_seconds=torch_s, floor_seconds=floor, vs_floor=rec["seconds"] / floor,
                               vs_torch=rec["seconds"] / torch_s)
                    print(f"{head} {rec['seconds'] * 1e3:8.3f} ms ({rec['vs_floor']:6.2f}x the "
                          f"{floor * 1e6:.0f} us floor; PyTorch {torch_s * 1e3:.3f} ms, {rec['vs_torch']:.2f}x; "
                          f"first call {rec['first_call_s']:.1f} s)", flush=True)
                else:
                    print(f"{head} right (first call {rec['first_call_s']:.1f} s)", flush=True)
                rows_out.append(rec)
        del index
        if not a.cpu_check:
            torch.cuda.empty_cache()
    out = Path(os.environ["OUT"]) / a.out if os.environ.get("OUT") else Path(a.out)
    device = "cpu (Triton's interpreter)" if a.cpu_check else torch.cuda.get_device_name(0)
    out.write_text(json.dumps({"device": device, "size": size, "checks": rows_out}, indent=1))
    print(f"{len(rows_out) - bad} of {len(rows_out)} plans right; {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
