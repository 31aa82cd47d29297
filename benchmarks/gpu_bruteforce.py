"""The GPU half of the ANN benchmark: exact brute force on the GPU against ScaNN on the same machine's CPUs.

    python benchmarks/gpu_bruteforce.py --out benchmarks/results/gpu/h200.json       # on a GPU machine
    bash benchmarks/gpu_half.sh                                                      # the same, wheels first

Runs without TensorFlow (the lent H200 machine has PyTorch, JAX and CuPy on
Python 3.12): it imports only scaleout's NumPy parts. For each synthetic
dataset (the same seeded generator as the CPU suite) it draws the vectors,
takes the exact top 100 of 1,000 queries with fp32 on the GPU, then for fp32
and bf16: recall@10/@100, single-query latency p50/p95/p99 and queries/s at
batch 1, 64 and 1024, with the host-to-device copy, scoring, top-k and copy
back inside the time. ScaNN (scaleout's index, IndexConfig defaults: the
tuned settings) runs on the machine's CPUs over the same data, one search
thread as on the CPU report. Stops starting new work after --budget seconds.
Without a GPU it prints what it found and writes nothing (exit 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaleout.bench import measure  # noqa: E402
from scaleout.bench.datasets import parse_size, synthetic_vectors  # noqa: E402
from scaleout.bench.gpu import GpuBruteForce, detect, device_name  # noqa: E402
from scaleout.fsutil import write_json  # noqa: E402

log = logging.getLogger("gpu_bruteforce")
QUERIES = 1024


def gpu_record(backend, dtype, name, train, queries, true_scores, cfg, on_cpu=False) -> dict:
    index = GpuBruteForce(backend, train, dtype, on_cpu)
    index.search(queries[:64], 10)  # compile / warm up
    out = measure.measure_queries(_Adapter(index), train, queries, true_scores, cfg)
    return {"dataset": name, "n": len(train), "dim": train.shape[1], "backend": backend, "dtype": dtype, **out}


class _Adapter:
    """GpuBruteForce seen through the benchmark's search/rows interface."""

    def __init__(self, index):
        self.index = index

    def search(self, queries, k):
        return self.index.search(queries, k)

    def rows(self, result):
        return np.asarray(result, dtype=np.int64)


def scann_record(name, train, queries, true_scores, cfg) -> dict:
    from scaleout.bench.algorithms import ScaleoutScann

    algo = ScaleoutScann()
    t0 = time.perf_counter()
    algo.build(train)
    build = time.perf_counter() - t0
    algo.set_query_args()
    out = measure.measure_queries(algo, train, queries, true_scores, cfg)
    return {"dataset": name, "n": len(train), "dim": train.shape[1], "algorithm": "scann",
            "settings": "IndexConfig defaults", "build_seconds": build, "build_threads": os.cpu_count(),
            "search_threads": 1, **out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu" / "gpu.json"))
    parser.add_argument("--sizes", nargs="+", default=["1M-32", "1M-128", "10M-32", "10M-128"],
                        help="synthetic datasets as <n>-<dim> (default %(default)s)")
    parser.add_argument("--scann", nargs="+", default=["1M-32", "1M-128", "10M-32"],
                        help="of those, the ones ScaNN also runs on, on the CPUs (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per latency / throughput measure")
    parser.add_argument("--budget", type=float, default=420.0, help="start no new dataset after this many seconds")
    parser.add_argument("--cpu-check", choices=("tensorflow", "jax", "torch"),
                        help="run the harness through this library on the CPU, GPU or not (a check, not a result)")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    on_cpu = a.cpu_check is not None
    backend, found = (a.cpu_check, {}) if on_cpu else detect()
    if backend is None:
        print("GPU half skipped: no GPU visible here (" + "; ".join(f"{k}: {v}" for k, v in found.items()) + "). "
              "Run this script on a GPU machine; nothing was written.")
        return 0
    device = device_name(backend, on_cpu)
    log.info("backend %s on %s", backend, device)
    cfg = {"k": 10, "seconds": a.seconds, "recall_queries": 1000, "latency_queries": 1000, "batch_sizes": [1, 64, 1024]}
    results, cpu_results, skipped = [], [], []
    start = time.monotonic()
    for size in a.sizes:
        if time.monotonic() - start > a.budget:
            skipped.append(size)
            continue
        n, dim = (parse_size(x) if i == 0 else int(x) for i, x in enumerate(size.split("-")))
        name = f"synthetic-{size}"
        train, queries = synthetic_vectors(n, dim, QUERIES)
        rows = GpuBruteForce(backend, train, "float32", on_cpu).search(queries, 100)
        true_scores = np.einsum("qd,qkd->qk", queries, train[rows])
        for dtype in ("float32", "bfloat16"):
            try:
                results.append(gpu_record(backend, dtype, name, train, queries, true_scores, cfg, on_cpu))
            except NotImplementedError as exc:
                log.info("%s %s: %s", name, dtype, exc)
                continue
            r = results[-1]
            log.info("%s %s %s: recall@10 %.4f p50 %.3f ms, q/s %s", name, backend, dtype, r["recall@10"],
                     r["latency"]["p50_ms"], {b: round(q) for b, q in r["qps"].items()})
        if size in a.scann:
            cpu_results.append(scann_record(name, train, queries, true_scores, cfg))
            r = cpu_results[-1]
            log.info("%s ScaNN on the CPUs: recall@10 %.4f p50 %.3f ms, build %.0f s", name, r["recall@10"],
                     r["latency"]["p50_ms"], r["build_seconds"])
        del train
    note = (f"Brute force through {backend} on {device}; ScaNN (IndexConfig defaults) on the same machine's "
            f"{os.cpu_count()} CPU cores, one search thread. Exact answers: the GPU's fp32 top 100.")
    if skipped:
        note += f" Not run (time budget of {a.budget:.0f} s spent): {', '.join(skipped)}."
    summary = {"device": device, "backend": backend, "found": found, "note": note, "machine": measure.machine(),
               "results": results, "cpu_results": cpu_results, "seconds": round(time.monotonic() - start, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(a.out), summary)
    print(json.dumps({"out": a.out, "results": len(results), "cpu_results": len(cpu_results), "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
