"""The GPU half of the ANN benchmark: exact brute force on the GPU against its floors and ScaNN on the same machine.

    python benchmarks/gpu_bruteforce.py --out benchmarks/results/gpu/h200.json       # on a GPU machine
    bash benchmarks/gpu_half.sh                                                      # the same, wheels first

Runs without TensorFlow (the lent H200 machine has PyTorch, JAX and CuPy on
Python 3.12): it imports only scaleout's NumPy parts. In one run:

1. **The device's ceilings**, measured: read bandwidth (a sum over 4 GiB),
   copy bandwidth, and fp32 / bf16 matrix-product rates (8192^3); the
   datasheet bandwidth beside them where the device is known.
2. **Per synthetic dataset** (the CPU suite's seeded generator; default 1M x 64,
   1M x 128, 10M x 64): the exact top 100 of 1,024 queries in fp32 on the GPU,
   checked against NumPy on a sample. Then for fp32 and bf16: recall@10 and
   @100 (each from a search for that k), one-query latency p50/p95/p99 and
   queries/s at batch 64, 1024 and 16384, at k=10, with the host-to-device
   copy, scoring, top k and copy back inside the time; once eagerly (a kernel
   launch per step) and once replaying a CUDA graph of the whole search
   (PyTorch; each batch's fastest plan of the search, timed by its replays:
   the one-query score product's form, the top-k way, the tile size). Beside
   each figure its floor: max(candidate bytes / bandwidth, 2·batch·N·d FLOP /
   matrix rate).
3. **The other array libraries' paths** (JAX, CuPy) on the first dataset:
   the same answers as PyTorch's, and their one-query latency.
4. **The CPU side of the same machine** for --scann: scaleout's NumPy brute
   force on every core (batch 1024), and ScaNN (IndexConfig defaults): one
   search thread as on the CPU report, and all cores (``search_batched_parallel``)
   at batch 16384; k = 10 and 100. These feed the cost table
   (scaleout.bench.cost).

The JSON is rewritten after every step (and copied under $OUT when the device
tool sets it), so a run cut short still returns what it measured. Stops starting
new datasets after --budget seconds. Without a GPU it prints what it found and
writes nothing (exit 0); --cpu-check runs the harness on a library's CPU
device instead (a check of the code, not a result).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU with PyTorch here

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaleout.bench import gpu as gpu_mod  # noqa: E402
from scaleout.bench import measure  # noqa: E402
from scaleout.bench.datasets import parse_size, synthetic_vectors  # noqa: E402
from scaleout.bench.gpu import GpuBruteForce  # noqa: E402
from scaleout.bench.gpu_devices import detect, device_name, event_seconds  # noqa: E402
from scaleout.fsutil import write_json  # noqa: E402

log = logging.getLogger("gpu_bruteforce")
QUERIES = 1024
K = 10
# Vendor datasheet memory bandwidth (bytes/s) by a word of the device's name: the floor the issue quotes.
DATASHEET_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}


class Eager:
    """GpuBruteForce seen through the benchmark's search/rows interface."""

    def __init__(self, index):
        self.index = index

    def search(self, queries, k):
        return self.index.search(queries, k)

    def rows(self, result):
        return np.asarray(result, dtype=np.int64)


class Graphed:
    """One captured CUDA graph per (batch, k), made on first use."""

    def __init__(self, index):
        self.index, self.graphs = index, {}

    def search(self, queries, k):
        key = (len(queries), k)
        if key not in self.graphs:
            self.graphs[key] = self.index.graphed(*key)
        return self.graphs[key](queries)

    def rows(self, result):
        return np.asarray(result, dtype=np.int64)


def ceilings(backend: str, on_cpu: bool, device: str) -> dict:
    """The device's measured read and copy bandwidth and matrix-product rates (PyTorch on a GPU only), and the
    datasheet bandwidth where the device is known."""
    out = {"datasheet_bytes_per_s": next((v for word, v in DATASHEET_BANDWIDTH.items() if word in device), None)}
    if backend != "torch" or on_cpu:
        return out
    import torch

    def timed(fn, repeats):  # the best of repeats
        return min(event_seconds(torch, fn, repeats))

    x = torch.ones(1 << 30, dtype=torch.float32, device="cuda")  # 4 GiB
    y = torch.empty_like(x)
    out["read_bytes_per_s"] = x.nbytes / timed(lambda: x.sum(), 10)
    out["copy_bytes_per_s"] = 2 * x.nbytes / timed(lambda: y.copy_(x), 10)  # read + write
    del x, y
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(8192, 8192, device="cuda").to(dt)
        out[f"{name}_flops"] = 2 * 8192 ** 3 / timed(lambda: a @ a, 5)
        del a
    # the top 10 of one query's 1M scores, and of batches of 1024 and 16384 queries' tiles: torch.topk on
    # each row, and through group maxima (scaleout.bench.gpu); the faster way is kept for the run
    probe = object.__new__(GpuBruteForce)
    probe.torch = torch
    above, max_rows = gpu_mod.GROUPED_ABOVE, gpu_mod.GROUPED_MAX_ROWS
    for rows, width in ((1, 1 << 20), (1024, 1 << 20), (16384, 1 << 16)):
        s = torch.randn(rows, width, device="cuda")
        plain = timed(lambda: torch.topk(s, K, dim=1), 20)
        gpu_mod.GROUPED_ABOVE, gpu_mod.GROUPED_MAX_ROWS = 0, 1 << 62  # the grouped way, whatever the shape
        grouped = timed(lambda: probe._top_k_wide(s, K), 20)
        out[f"topk_{rows}x{width}"] = {"torch.topk_s": plain, "group_maxima_s": grouped}
        # Timed eagerly, so one row's ten small kernels wait on their launches: in a CUDA graph the grouped way
        # pays no launch gaps. Only batches (launch-bound neither way) decide; on 2026-11-29 a run that let
        # the one row decide too switched the grouped way off everywhere and lost 2.5x at batch 1024.
        if rows > 1 and grouped >= plain:
            max_rows = min(max_rows, rows - 1)
        del s
    gpu_mod.GROUPED_ABOVE, gpu_mod.GROUPED_MAX_ROWS = above, max_rows
    out["grouped_above"], out["grouped_max_rows"] = gpu_mod.GROUPED_ABOVE, gpu_mod.GROUPED_MAX_ROWS
    torch.cuda.empty_cache()
    return out


def floors(n: int, dim: int, dtype: str, batches: list[int], ceil: dict) -> dict:
    """Per batch size: the seconds one search of that batch cannot beat, max(candidate bytes / bandwidth,
    FLOP / matrix rate), with bandwidth the datasheet figure (else the measured read rate)."""
    bandwidth = ceil.get("datasheet_bytes_per_s") or ceil.get("read_bytes_per_s")
    rate = ceil.get(f"{dtype}_flops")
    if not bandwidth:
        return {}
    element = 4 if dtype == "float32" else 2
    out = {}
    for b in batches:
        memory = n * dim * element / bandwidth
        compute = 2 * b * n * dim / rate if rate else 0.0
        out[str(b)] = {"bandwidth_s": memory, "compute_s": compute, "floor_s": max(memory, compute),
                       "floor_qps": b / max(memory, compute)}
    return out


def against_floor(r: dict, fl: dict) -> dict:
    """Measured / floor: one-query p50 latency, and floor throughput / measured throughput per batch (>= 1)."""
    if not fl:
        return {}
    out = {"p50": r["latency"]["p50_ms"] / 1e3 / fl["1"]["floor_s"]}
    for b, q in r["qps"].items():
        if b != "1" and b in fl:
            out[b] = fl[b]["floor_qps"] / q
    return out


def gpu_records(index, name, train, queries, true_scores, cfg, fl, graphs: bool) -> dict:
    out = measure.measure_queries(Eager(index), train, queries, true_scores, cfg)
    out["qps_by_k"] = {"100": {"1024": measure.throughput(index.search, queries, 100, 1024, cfg["seconds"])[0]}}
    rec = {"dataset": name, "n": len(train), "dim": train.shape[1], "backend": index.backend, "dtype": index.dtype,
           "scores": getattr(index, "scores", "float32"), "k": cfg["k"], **out, "floors": fl}
    rec["vs_floor"] = against_floor(rec, fl)
    if graphs:
        try:
            graphed = Graphed(index)  # one graph per (batch, k), captured and its plan chosen once
            g = measure.measure_queries(graphed, train, queries, true_scores, {**cfg, "recall_queries": 1024})
            rec["graph"] = {"latency": g["latency"], "qps": g["qps"], "recall@10": g["recall@10"],
                            "recall@100": g.get("recall@100"), "by_k": g["by_k"], "qps_by_k": {"100": {
                                "1024": measure.throughput(graphed.search, queries, 100, 1024,
                                                           cfg["seconds"])[0]}}}
            rec["graph"]["vs_floor"] = against_floor(rec["graph"], fl)
            rec["graph"]["plans"] = dict(index.tuned)  # per "<batch>x<k>": the plan chosen and every plan's replay
        except Exception as exc:  # a failed capture is a finding, not the end of the run
            log.warning("%s %s: CUDA graph path failed: %s", name, index.dtype, exc)
            rec["graph_error"] = f"{type(exc).__name__}: {exc}"
            rec["graph_plans"] = dict(index.tuned)  # what was timed (and what failed) before it
    return rec


def numpy_check(train, queries, rows) -> tuple[float, int]:
    """(recall@100 of the GPU's fp32 top 100 against NumPy's exact scores (1.0: the same), queries checked): 100
    queries, fewer for catalogues over 2M (NumPy scores them on the CPU)."""
    sample = max(10, min(100, 200_000_000 // len(train)))
    q = queries[:sample]
    scores = q @ train.T
    part = np.argpartition(-scores, 99, axis=1)[:, :100]
    true = -np.sort(-np.take_along_axis(scores, part, 1), axis=1)
    return measure.recall(train, q, rows[:sample], true, 100), sample


def other_paths(train, queries, reference_rows, true_scores, seconds) -> list[dict]:
    """JAX's and CuPy's fp32 paths on the GPU: recall of their top 100 against PyTorch's exact one, one-query p50."""
    out = []
    for backend in ("jax", "cupy"):
        try:
            index = GpuBruteForce(backend, train, "float32")
            index.search(queries[:64], K)
            rows = np.concatenate([index.search(queries[i:i + 512], 100) for i in range(0, len(queries), 512)])
            lat = measure.latencies(index.search, queries, K, 1000, seconds)
            out.append({"backend": backend, "dtype": "float32", "recall@100": measure.recall(
                train, queries, rows, true_scores, 100), "same_rows@100": float((rows == reference_rows).mean()),
                "latency": measure.percentiles(lat)})
            del index
        except Exception as exc:
            log.warning("%s path failed: %s", backend, exc)
            out.append({"backend": backend, "error": f"{type(exc).__name__}: {exc}",
                        "trace": traceback.format_exc()[-1500:]})
        log.info("path %s: %s", backend, {k: v for k, v in out[-1].items() if k != "trace"})
    return out


def scann_record(name, train, queries, true_scores, cfg) -> dict:
    from scaleout.bench.algorithms import ScaleoutScann

    algo = ScaleoutScann()
    t0 = time.perf_counter()
    algo.build(train)
    build = time.perf_counter() - t0
    algo.set_query_args()
    out = measure.measure_queries(algo, train, queries, true_scores, {**cfg, "batch_sizes": [1, 64, 1024]})
    index = algo.index
    settings = {kk: index.search_settings(kk) for kk in (10, 100)}
    many = np.resize(queries, (16384, queries.shape[1]))
    parallel = {}
    for kk in (10, 100):
        index.searcher.search_batched_parallel(many[:1024], **settings[kk])
        t0, done = time.perf_counter(), 0
        while time.perf_counter() - t0 < cfg["seconds"] or done == 0:
            index.searcher.search_batched_parallel(many, **settings[kk])
            done += len(many)
        parallel[str(kk)] = done / (time.perf_counter() - t0)
    return {"dataset": name, "n": len(train), "dim": train.shape[1], "algorithm": "scann",
            "settings": "IndexConfig defaults", "search_settings": settings, "build_seconds": build,
            "build_threads": os.cpu_count(), "search_threads": 1, **out,
            "parallel": {"threads": os.cpu_count(), "batch": len(many), "qps": parallel["10"], "qps_by_k": parallel}}


def cpu_bruteforce_record(name, train, queries, cfg) -> dict:
    """scaleout's NumPy brute force on every CPU core of this machine: one-query p50 and queries/s at batch 1024,
    for k = 10 and 100 (exact: recall 1)."""
    from scaleout.index.brute_force import BruteForce

    index = BruteForce().build(np.arange(len(train)), train)
    out = {"dataset": name, "n": len(train), "dim": train.shape[1], "algorithm": "bruteforce", "threads": os.cpu_count(),
           "recall@10": 1.0, "recall@100": 1.0, "by_k": {}}
    for kk in (10, 100):
        lat = measure.latencies(index.search, queries, kk, 200, cfg["seconds"])
        out["by_k"][str(kk)] = {"recall": 1.0, "latency": measure.percentiles(lat),
                                "qps": {"1024": measure.throughput(index.search, queries, kk, 1024, cfg["seconds"])[0]}}
    out["latency"], out["qps"] = out["by_k"]["10"]["latency"], out["by_k"]["10"]["qps"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu" / "gpu.json"))
    parser.add_argument("--sizes", nargs="+", default=["1M-64", "1M-128", "10M-64"],
                        help="synthetic datasets as <n>-<dim> (default %(default)s)")
    parser.add_argument("--scann", nargs="+", default=["1M-64", "1M-128", "10M-64"],
                        help="of those, the ones ScaNN also runs on, on the CPUs (default %(default)s)")
    parser.add_argument("--cpu-bruteforce", nargs="+", default=["1M-64", "1M-128", "10M-64"],
                        help="of those, the ones NumPy brute force runs on, on every CPU core (default %(default)s)")
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 1024, 16384],
                        help="batch sizes for throughput (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per latency / throughput measure")
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
    start = time.monotonic()
    cfg = {"k": K, "ks": (10, 100), "seconds": a.seconds, "recall_queries": QUERIES, "latency_queries": 1000,
           "batch_sizes": [1, *a.batches]}
    summary = {"device": device, "backend": backend, "found": found, "machine": measure.machine(), "k": K,
               "queries": QUERIES, "batches": [1, *a.batches], "results": [], "cpu_results": [], "paths": [],
               "reference_check": []}
    out = Path(a.out)

    def save(note: str = "") -> None:
        summary["seconds"] = round(time.monotonic() - start, 1)
        summary["note"] = note or summary.get("note", "")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, summary)
        if os.environ.get("OUT"):
            shutil.copy(out, Path(os.environ["OUT"]) / out.name)

    try:
        summary["ceilings"] = ceilings(backend, on_cpu, device)
    except Exception as exc:  # the floors are then left out, the measures are not
        log.warning("ceilings not measured: %s", exc)
        summary["ceilings"] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    log.info("ceilings: %s", summary["ceilings"])
    save()
    graphs = backend == "torch" and not on_cpu
    kept, skipped = {}, []
    for size in a.sizes:
        if time.monotonic() - start > a.budget:
            skipped.append(size)
            continue
        n, dim = (parse_size(x) if i == 0 else int(x) for i, x in enumerate(size.split("-")))
        name = f"synthetic-{size}"
        t0 = time.perf_counter()
        train, queries = synthetic_vectors(n, dim, QUERIES)
        log.info("%s drawn in %.1f s", name, time.perf_counter() - t0)
        exact = GpuBruteForce(backend, train, "float32", on_cpu)
        rows = np.concatenate([exact.search(queries[i:i + 256], 100) for i in range(0, QUERIES, 256)])
        del exact
        true_scores = np.einsum("qd,qkd->qk", queries, train[rows])
        check, sample = numpy_check(train, queries, rows)
        summary["reference_check"].append({"dataset": name, "recall@100_vs_numpy": check, "queries": sample})
        log.info("%s: the fp32 top 100 against NumPy's on %d queries: recall %.4f", name, sample, check)
        for dtype in ("float32", "bfloat16"):
            try:
                index = GpuBruteForce(backend, train, dtype, on_cpu)
                index.search(queries[:64], K)  # compile / warm up
                fl = floors(n, dim, dtype, cfg["batch_sizes"], summary["ceilings"])
                summary["results"].append(gpu_records(index, name, train, queries, true_scores, cfg, fl, graphs))
                del index
            except NotImplementedError as exc:
                log.info("%s %s: %s", name, dtype, exc)
                continue
            r = summary["results"][-1]
            log.info("%s %s %s: recall@10 %.4f @100 %.4f p50 %.4f ms, q/s %s, vs floor %s; graph %s", name, backend,
                     dtype, r["recall@10"], r["recall@100"], r["latency"]["p50_ms"],
                     {b: round(q) for b, q in r["qps"].items()}, {b: round(v, 2) for b, v in r["vs_floor"].items()},
                     r.get("graph", {}).get("latency", {}).get("p50_ms") or r.get("graph_error"))
            save()
            if graphs:
                import torch

                torch.cuda.empty_cache()
        if graphs and not summary["paths"]:
            summary["paths"] = other_paths(train, queries, rows, true_scores, min(a.seconds, 0.5))
            save()
        if size in a.scann or size in a.cpu_bruteforce:
            kept[size] = (name, train, queries, true_scores)
        del train
    for size, (name, train, queries, true_scores) in kept.items():
        if time.monotonic() - start > a.budget + 120:
            skipped.append(f"CPU side of {size}")
            continue
        if size in a.cpu_bruteforce:
            try:
                summary["cpu_results"].append(cpu_bruteforce_record(name, train, queries, cfg))
                r = summary["cpu_results"][-1]
                log.info("%s NumPy brute force on %d cores: p50 %.2f ms, batch 1024 %.0f q/s", name, r["threads"],
                         r["latency"]["p50_ms"], r["qps"]["1024"])
                save()
            except Exception as exc:
                log.warning("NumPy brute force on %s failed: %s", name, exc)
        if size not in a.scann:
            continue
        try:
            summary["cpu_results"].append(scann_record(name, train, queries, true_scores, cfg))
        except Exception as exc:
            log.warning("ScaNN on %s failed: %s", name, exc)
            summary["cpu_results"].append({"dataset": name, "algorithm": "scann", "error": f"{type(exc).__name__}: {exc}"})
            continue
        r = summary["cpu_results"][-1]
        log.info("%s ScaNN on the CPUs: recall@10 %.4f @100 %.4f p50 %.4f ms, build %.0f s, %d threads %.0f q/s", name,
                 r["recall@10"], r["recall@100"], r["latency"]["p50_ms"], r["build_seconds"], r["parallel"]["threads"],
                 r["parallel"]["qps"])
        save()
    note = (f"Brute force through {backend} on {device}; ScaNN (IndexConfig defaults) on the same machine's "
            f"{os.cpu_count()} CPU cores. Exact answers: the GPU's fp32 top 100, checked against NumPy on a sample (reference_check).")
    if skipped:
        note += f" Not run (time budget of {a.budget:.0f} s spent): {', '.join(skipped)}."
    save(note)
    print(json.dumps({"out": a.out, "results": len(summary["results"]), "cpu_results": len(summary["cpu_results"]),
                      "skipped": skipped, "seconds": summary["seconds"]}))
    return 0


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
