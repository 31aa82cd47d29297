"""The measures: recall against exact search, latency percentiles, throughput, memory bandwidth, sizes."""

from __future__ import annotations

import functools
import os
import statistics
import time
from pathlib import Path

import numpy as np


def recall(train: np.ndarray, queries: np.ndarray, rows: np.ndarray, true_scores: np.ndarray, k: int) -> float:
    """Mean over queries of the share of returned rows scoring at least the true k-th best score.

    Scores of the returned rows are recomputed exactly (an index's own scores
    may be approximate), and a row tied with the k-th true score counts as
    found, as in ann-benchmarks. rows [q, >=k]; true_scores [q, >=k], best first.
    """
    rows = rows[:, :k]
    valid = rows >= 0  # FAISS and hnswlib pad with -1 when they find fewer than k
    got = np.einsum("qd,qkd->qk", queries, train[np.where(valid, rows, 0)])
    kth = true_scores[:, k - 1:k]
    tolerance = 1e-5 * np.maximum(1.0, np.abs(kth))
    found = (got >= kth - tolerance) & valid
    return float(found.sum(axis=1).mean() / k)


def steady_examples_per_second(history: list[dict]) -> float:
    """A fit's examples/s once traced: the median of its epochs' after the first (the first alone if it had one),
    from a history as ``scaleout.train.callbacks.EpochLog`` writes it."""
    return statistics.median(e["examples_per_second"] for e in history[1:] or history)


def median_seconds(fn, repeats: int, calls: int = 1, warmup: int = 1) -> float:
    """Median over ``repeats`` runs of the seconds one call of ``fn()`` takes, each run timing ``calls`` calls
    in a row (their mean), after ``warmup`` calls (tracing, caches)."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return statistics.median(runs)


def latencies(search, queries: np.ndarray, k: int, max_queries: int, seconds: float) -> np.ndarray:
    """Seconds of ``search(one query [1, dim], k)`` for up to ``max_queries`` queries or ``seconds`` in all
    (at least 5 queries), after one search outside the time (see ``throughput``: on the H200 on 2026-12-04 a
    first search's capture and tuning ran past ``seconds`` and left five queries timed, two of them slow)."""
    search(queries[:1], k)  # the warm-up
    out = []
    deadline = time.perf_counter() + seconds
    for i in range(min(max_queries, len(queries))):
        q = queries[i:i + 1]
        t0 = time.perf_counter()
        search(q, k)
        out.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline and len(out) >= 5:
            break
    return np.array(out)


def throughput(search, queries: np.ndarray, k: int, batch: int, seconds: float) -> tuple[float, int]:
    """(queries per second, queries run) of ``search`` on batches of ``batch`` queries, cycling through
    ``queries`` until ``seconds`` pass (at least one batch), after one batch outside the time: a first search
    of a new batch size may compile or capture (a GPU search's CUDA graph and the tuning of its plan took
    tens of seconds on the H200 and had counted as the throughput at batch 16,384 until 2026-12-04)."""
    if batch > len(queries):
        queries = np.resize(queries, (batch, queries.shape[1]))
    search(queries[:batch], k)  # the warm-up
    done, elapsed, start = 0, 0.0, 0
    while elapsed < seconds or done == 0:
        if start + batch > len(queries):
            start = 0
        q = queries[start:start + batch]
        t0 = time.perf_counter()
        search(q, k)
        elapsed += time.perf_counter() - t0
        done += batch
        start += batch
    return done / elapsed, done


def measure_queries(algo, train, queries, true_scores, cfg) -> dict:
    """Recall@k for every k of ``cfg["ks"]`` (default 10 and 100) that the exact answers reach, each from a
    search for that k in batches of 1024, over the first ``recall_queries`` queries; then at cfg["k"]:
    single-query latency and throughput per batch size; and single-query latency at every other k.
    ``by_k`` holds, per k, the recall and the latency of searches for that k: what a retrieval stage serving
    k candidates gets."""
    k, seconds, m = cfg["k"], cfg["seconds"], min(len(queries), cfg.get("recall_queries", len(queries)))
    ks = sorted({kk for kk in cfg.get("ks", (10, 100)) if kk <= min(len(train), true_scores.shape[1])} | {k})
    out = {"recall_queries": m}
    for kk in ks:
        rows = np.concatenate([algo.rows(algo.search(queries[i:min(m, i + 1024)], kk)) for i in range(0, m, 1024)])
        out[f"recall@{kk}"] = recall(train, queries[:m], rows, true_scores[:m], kk)
    lat = latencies(algo.search, queries, k, cfg["latency_queries"], seconds)
    out["latency"] = percentiles(lat)
    out["qps"] = {}
    for batch in cfg["batch_sizes"]:
        if batch == 1:
            out["qps"]["1"] = 1.0 / lat.mean()
        else:
            out["qps"][str(batch)] = throughput(algo.search, queries, k, batch, seconds)[0]
    out["by_k"] = {str(k): {"recall": out[f"recall@{k}"], "latency": out["latency"]}}
    for kk in ks:
        if kk != k:
            out["by_k"][str(kk)] = {"recall": out[f"recall@{kk}"], "latency": percentiles(
                latencies(algo.search, queries, kk, cfg["latency_queries"], seconds))}
    return out


def percentiles(seconds: np.ndarray) -> dict:
    ms = seconds * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "queries": int(len(ms))}


def memory_bandwidth(megabytes: int = 1024, repeats: int = 5) -> dict:
    """Single-thread streaming read bandwidth (bytes/s): the best of a NumPy sum and a BLAS matrix-vector
    product over ``megabytes`` of float32, each the best of ``repeats``. Call with BLAS limited to one thread."""
    x = np.ones(megabytes * (1 << 20) // 4, np.float32)
    m, v = x.reshape(-1, 32), np.ones(32, np.float32)
    best = {}
    for name, fn in (("sum", x.sum), ("gemv", lambda: m @ v)):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = x.nbytes / min(times)
    return {"bytes_per_s": max(best.values()), "by_kernel": best, "array_bytes": x.nbytes}


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@functools.lru_cache(maxsize=1)
def machine() -> dict:
    """CPU model, cores, memory and library versions of this machine (read once per process)."""
    import platform

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for lib in ("numpy", "scann", "faiss-cpu", "hnswlib", "tensorflow", "tensorflow-recommenders", "torch", "jax",
                "cupy-cuda12x", "cupy-cuda13x"):
        try:
            from importlib.metadata import version

            versions[lib] = version(lib)
        except Exception:  # not installed here
            continue
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions}
