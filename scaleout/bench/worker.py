"""One (dataset, index, build arguments) in its own process: build once, then every query setting.

    python -m scaleout.bench.worker '<json spec from scaleout.bench.runner>'

Memory: the resident set before the candidates are loaded is subtracted from
the one after the build, once this process has dropped its own reference to
the candidates; an index that keeps them (brute force, HNSW's flat vectors)
is charged for them. Builds use every core; searches one thread.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import scaleout  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from scaleout.bench import measure
from scaleout.bench.algorithms import EXACT, NEEDS_TENSORFLOW, make
from scaleout.bench.datasets import Dataset
from scaleout.bench.runner import result_path
from scaleout.errors import ScaleoutError
from scaleout.fsutil import write_json
from scaleout.scratch import scratch

log = logging.getLogger("scaleout.bench")


def main(spec: dict) -> None:
    cfg = spec["config"]
    path = Path(spec["dataset"])
    dataset = Dataset(path.name, path, json.loads((path / "dataset.json").read_text()))
    name, build_args = spec["algorithm"], spec["build"]
    cores = os.cpu_count() or 1
    if name in NEEDS_TENSORFLOW:
        from scaleout.tfenv import tf

        # TensorFlow fixes its thread pools when it starts: one thread for build and search alike.
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    queries, true_scores = dataset.queries(), dataset.true_scores()
    algo = make(name, build_args)
    for module in algo.modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ScaleoutError(f"{name} needs {exc.name!r}, which is not installed: pip install 'scaleout[bench]'") from exc
    algo.threads(cores)
    gc.collect()
    rss_before = measure.rss()
    train = dataset.train()
    t0 = time.perf_counter()
    algo.build(train)
    build_seconds = time.perf_counter() - t0
    del train
    gc.collect()
    memory = max(0, measure.rss() - rss_before)
    log.info("%s %s on %s: built in %.1f s, %.1f MiB", name, build_args, dataset.name, build_seconds, memory / 2**20)
    with scratch("bench") as tmp:  # an index of 10M vectors is GiBs: swept if this worker is killed
        t0 = time.perf_counter()
        algo.save(tmp / "index")
        save_seconds = time.perf_counter() - t0
        disk = measure.disk_bytes(tmp)
    algo.threads(1)
    bandwidth = None
    if name in EXACT:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            bandwidth = measure.memory_bandwidth(cfg["bandwidth_mb"])
    train = dataset.train(mmap=True)
    seen: dict[str, dict] = {}
    for query_args in spec["queries"]:
        applied = algo.applicable(query_args)
        key = json.dumps(applied, sort_keys=True)
        algo.set_query_args(**query_args)
        record = {
            "dataset": dataset.name, "n": dataset.n, "dim": dataset.dim, "algorithm": name,
            "build_args": build_args, "query_args": query_args, "applied_query_args": applied,
            "duplicate_of_earlier_setting": key in seen,
            "build_seconds": build_seconds, "memory_bytes": memory, "disk_bytes": disk, "save_seconds": save_seconds,
            "search_threads": 1, "build_threads": 1 if name in NEEDS_TENSORFLOW else cores, "k": cfg["k"],
        }
        if key in seen:  # the same search as an earlier setting (e.g. leaves on an index without a tree)
            record.update({m: seen[key][m] for m in seen[key] if m == "recall_queries" or m.startswith("recall@")
                           or m in ("latency", "qps", "by_k")})
        else:
            record.update(measure.measure_queries(algo, train, queries, true_scores, cfg))
            seen[key] = record
        if bandwidth:
            floor_ms = dataset.n * dataset.dim * 4 / bandwidth["bytes_per_s"] * 1e3
            record["bandwidth"] = {**bandwidth, "floor_ms": floor_ms,
                                   "p50_over_floor": record["latency"]["p50_ms"] / floor_ms}
        record["machine"] = measure.machine()
        out = result_path(Path(spec["results"]), dataset.name, name, build_args, query_args)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, record)
        log.info("%s %s %s: recall@10 %.4f, p50 %.3f ms, %s", dataset.name, name, query_args, record["recall@10"],
                 record["latency"]["p50_ms"],
                 ", ".join(f"{b}: {q:,.0f} q/s" for b, q in record["qps"].items()))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        main(json.loads(sys.argv[1]))
    except ScaleoutError as exc:
        log.error("benchmark worker: %s", exc)
        sys.exit(1)
    except Exception:
        log.exception("benchmark worker failed")
        sys.exit(1)
