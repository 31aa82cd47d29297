"""The fused Triton search (scaleout.bench.gpu_fused) on a GPU: right answers first, then its kernels' time.

    python benchmarks/gpu_fused_check.py [--size 1M-64]          # on a GPU machine, before gpu_half.sh

For fp32 and bf16, one query and batches of 64, 1,024 and 16,384, k = 10 and 100, and every block size a
captured search may choose: the scores of the rows it returns against an exact PyTorch search's (matrix
product and torch.topk), then the median time of 20 eager searches (CUDA events: kernels and launches, no host
copies) beside the bandwidth floor (the candidates' bytes at the datasheet's 4.8 TB/s) and the PyTorch search's
time. Prints a table and writes fused-check.json (under $OUT where the device tool sets it). Exits 1 if any
answer is wrong or a kernel fails to compile, after trying every shape; a first check of a run on a lent GPU,
costing seconds, before the long one.
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

from scaleout.bench import gpu_fused  # noqa: E402
from scaleout.bench.datasets import parse_size, synthetic_vectors  # noqa: E402
from scaleout.bench.gpu import GpuBruteForce, Plan  # noqa: E402

BANDWIDTH = 4.8e12  # H200 datasheet, bytes/s


def timed(torch, fn, repeats=20) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1M-64", help="synthetic <n>-<dim> (default %(default)s)")
    parser.add_argument("--out", default="fused-check.json")
    a = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() or gpu_fused.missing():
        print(f"no GPU or no Triton here ({gpu_fused.missing() or 'torch.cuda.is_available() is False'}); "
              "nothing was checked")
        return 0
    n, dim = (parse_size(x) if i == 0 else int(x) for i, x in enumerate(a.size.split("-")))
    train, queries = synthetic_vectors(n, dim, 16384)
    rows_out, bad = [], 0
    for dtype in ("float32", "bfloat16"):
        index = GpuBruteForce("torch", train, dtype)
        for batch, k in ((1, 10), (1, 100), (64, 10), (1024, 10), (1024, 100), (16384, 10)):
            q = torch.from_numpy(queries[:batch]).cuda().to(index.dt)
            with torch.inference_mode():
                exact = index.answer_scores(q, index._top_k_torch(q, k, Plan().chunk(batch, k)))
                torch_s = timed(torch, lambda: index._top_k_torch(q, k, Plan().chunk(batch, k)))
            floor = n * dim * (4 if dtype == "float32" else 2) / BANDWIDTH
            for plan in [p for p in index.plans(batch, k) if p.top_k == "fused"]:
                rec = {"dtype": dtype, "batch": batch, "k": k, "block": plan.tile,
                       "shape": {kk: v for kk, v in gpu_fused.config(batch, k, dim, plan.tile, dtype == "float32")
                                 .items()}}
                try:
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        got = gpu_fused.top_k(index.x, q, k, plan.tile)
                        torch.cuda.synchronize()
                        rec["first_call_s"] = time.perf_counter() - t0  # the compile, mostly
                        index.check_answer(index.answer_scores(q, got), exact, plan.name(batch))
                        rec["seconds"] = timed(torch, lambda: gpu_fused.top_k(index.x, q, k, plan.tile))
                    rec.update(torch_seconds=torch_s, floor_seconds=floor, vs_floor=rec["seconds"] / floor,
                               vs_torch=rec["seconds"] / torch_s)
                except Exception as exc:
                    bad += 1
                    rec["error"] = f"{type(exc).__name__}: {exc}"[:600]
                    rec["trace"] = traceback.format_exc()[-1500:]
                rows_out.append(rec)
                if "error" in rec:
                    print(f"{dtype:8} b={batch:<5} k={k:<3} block {plan.tile:<4} FAILED {rec['error']}", flush=True)
                else:
                    print(f"{dtype:8} b={batch:<5} k={k:<3} block {plan.tile:<4} {rec['seconds'] * 1e3:8.3f} ms "
                          f"({rec['vs_floor']:6.2f}x the {floor * 1e6:.0f} us floor; PyTorch {torch_s * 1e3:.3f} ms, "
                          f"{rec['vs_torch']:.2f}x; first call {rec['first_call_s']:.1f} s)", flush=True)
        del index
        torch.cuda.empty_cache()
    out = Path(os.environ["OUT"]) / a.out if os.environ.get("OUT") else Path(a.out)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "size": a.size, "checks": rows_out},
                              indent=1))
    print(f"{len(rows_out) - bad} of {len(rows_out)} shapes right; {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
