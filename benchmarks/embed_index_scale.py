"""Embedding and indexing at scale: synthetic candidates through the real job, 1 and 2 Ray workers in one run.

    python benchmarks/embed_index_scale.py                      # 10M x 64 (throughput, memory) and 1M x 64 (recall)
    python benchmarks/embed_index_scale.py --sizes 200000 --scale-size 200000   # a quick look

For each size N it writes a synthetic candidate table (N ids and titles, 10
Parquet shards) and a candidate tower shaped as the TFRS tutorial's
(StringLookup over the N ids + Embedding of --dim), whose embedding rows are
drawn from a seeded clustered distribution (2,000 centres, Gaussian spread,
log-normal norms), plus 1,000 queries from the same distribution. Then:

  * on --scale-size: the embedding job (scaleout.embed.job on a local Ray
    instance of 2 CPUs) with 1 worker and with 2 workers, each from scratch;
    throughput per worker and together (steady state, excluding actor
    start-up) and wall time; then the ScaNN index built from the embeddings
    with the default settings; peak memory of the machine over all of it;
  * on every size: recall@10 of the ScaNN index with default search settings
    against exact brute force for the 1,000 queries, and their queries/s.

Figures go to stdout and benchmarks/results/embed_index_scale.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401
from scaleout.bench.datasets import clustered  # noqa: E402  (the ANN suite's generator)
from scaleout.names import part_name  # noqa: E402

CENTRES, QUERIES, SEED = 2_000, 1_000, 0


def make_inputs(root: Path, n: int, dim: int) -> None:
    """Candidate table, tutorial-shaped candidate tower with clustered rows, and queries (in a child process)."""
    from scaleout.train.towers import id_tower

    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((CENTRES, dim), np.float32)
    ids = np.char.add("c", np.char.zfill(np.arange(n).astype(str), 9))
    (root / "candidates").mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.arange(n), 10)):
        pq.write_table(pa.table({"movie_id": ids[chunk], "movie_title": np.char.add("Item ", chunk.astype(str))}),
                       root / "candidates" / part_name(i))
    tower = id_tower(ids.astype(object), dim, "candidate")
    weights = np.empty((n + 1, dim), np.float32)
    weights[0] = 0.0  # the out-of-vocabulary row
    for start in range(0, n, 1_000_000):
        stop = min(n, start + 1_000_000)
        weights[1 + start:1 + stop] = clustered(rng, centres, stop - start)
    tower.layers[-1].set_weights([weights])
    tower.save(root / "model" / "candidate_tower")
    np.save(root / "queries.npy", clustered(rng, centres, QUERIES))


class PeakMemory:
    """Highest memory in use on the machine (psutil), sampled every 0.2 s, above the level at start."""

    def __init__(self):
        self.base = psutil.virtual_memory().used
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, psutil.virtual_memory().used)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_used_gib": round(self.peak / 2**30, 2), "above_start_gib": round((self.peak - self.base) / 2**30, 2)}


def recall_of_defaults(emb_dir: Path, queries: np.ndarray, index_dir: Path) -> dict:
    from scaleout.embed.embedding_set import EmbeddingSet
    from scaleout.index.brute_force import BruteForce
    from scaleout.index.scann import Scann

    ids, vectors, _ = EmbeddingSet(emb_dir).load()
    start = time.monotonic()
    scann = Scann().build(ids, vectors)
    build = time.monotonic() - start
    scann.save(index_dir)
    exact = BruteForce().build(ids, vectors)
    start = time.monotonic()
    _, truth = exact.search(queries, 10)
    bf_seconds = time.monotonic() - start
    start = time.monotonic()
    _, got = scann.search(queries, 10)
    scann_seconds = time.monotonic() - start
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]))
    disk = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    return {"candidates": len(ids), "mode": scann.mode, "num_leaves": scann.num_leaves,
            "search": scann.search_settings(10), "build_seconds": round(build, 1), "recall_at_10": round(recall, 4),
            "scann_queries_per_s": round(len(queries) / scann_seconds), "brute_force_queries_per_s":
            round(len(queries) / bf_seconds), "index_bytes_on_disk": disk}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="catalogue sizes for the recall check (default %(default)s)")
    parser.add_argument("--scale-size", type=int, default=10_000_000, help="size for throughput and memory")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--part-rows", type=int, default=500_000)
    parser.add_argument("--workdir", default="/tmp/scaleout-embed-bench")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "embed_index_scale.json"))
    args = parser.parse_args()

    import logging

    import ray

    from scaleout.config import EmbedConfig
    from scaleout.embed.job import embed_candidates

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    results: dict = {"dim": args.dim, "part_rows": args.part_rows, "machine": {
        "cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}, "sizes": {}}
    ctx = multiprocessing.get_context("spawn")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"TF_USE_LEGACY_KERAS": "1"}})
    try:
        for n in sorted(set(args.sizes) | {args.scale_size}):
            root = work / f"n{n}"
            start = time.monotonic()
            child = ctx.Process(target=make_inputs, args=(root, n, args.dim))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"making the synthetic inputs of {n:,} candidates failed")
            print(f"[{n:,}] inputs made in {time.monotonic() - start:.0f} s", flush=True)
            entry: dict = {}
            memory = PeakMemory()
            worker_counts = (1, 2) if n == args.scale_size else (2,)
            for workers in worker_counts:
                out = root / f"embeddings_w{workers}"
                start = time.monotonic()
                emb = embed_candidates(root / "model", root / "candidates", out,
                                       EmbedConfig(backend="ray", workers=workers, part_rows=args.part_rows))
                job = emb.meta["job"]
                entry[f"workers_{workers}"] = {
                    "wall_seconds": round(time.monotonic() - start, 1),
                    "wall_candidates_per_s": round(n / (time.monotonic() - start)),
                    "steady_candidates_per_s": job["steady_candidates_per_s"],
                    "all_workers_candidates_per_s": job["all_workers_candidates_per_s"],
                    "per_worker_candidates_per_s": sorted(job["per_worker_candidates_per_s"].values()),
                    "tower_per_worker_candidates_per_s": sorted(job["tower_per_worker_candidates_per_s"].values()),
                }
                print(f"[{n:,}] {workers} worker(s): {entry[f'workers_{workers}']}", flush=True)
            if n == args.scale_size:
                entry["speedup_2_vs_1"] = {
                    key: round(entry["workers_2"][key] / entry["workers_1"][key], 2)
                    for key in ("all_workers_candidates_per_s", "steady_candidates_per_s", "wall_candidates_per_s")}
            entry["index"] = recall_of_defaults(root / f"embeddings_w{worker_counts[-1]}", np.load(root / "queries.npy"),
                                                root / "index")
            entry["memory"] = memory.stop()
            print(f"[{n:,}] {json.dumps(entry)}", flush=True)
            results["sizes"][str(n)] = entry
            shutil.rmtree(root)
    finally:
        ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'candidates':>12} {'workers':>8} {'per worker/s':>22} {'tower/worker/s':>22} {'all/s':>9} "
          f"{'steady/s':>9} {'wall/s':>9}")
    for n, e in results["sizes"].items():
        for w in (1, 2):
            if f"workers_{w}" in e:
                r = e[f"workers_{w}"]
                print(f"{int(n):>12,} {w:>8} {str(r['per_worker_candidates_per_s']):>22} "
                      f"{str(r['tower_per_worker_candidates_per_s']):>22} {r['all_workers_candidates_per_s']:>9,} "
                      f"{r['steady_candidates_per_s']:>9,} {r['wall_candidates_per_s']:>9,}")
        if "speedup_2_vs_1" in e:
            print(f"{'':>12} 2 vs 1 workers: {e['speedup_2_vs_1']}")
    print(f"\n{'candidates':>12} {'mode':>6} {'leaves':>7} {'build s':>8} {'recall@10':>10} {'ScaNN q/s':>10} "
          f"{'exact q/s':>10} {'peak GiB':>9}")
    for n, e in results["sizes"].items():
        i = e["index"]
        print(f"{int(n):>12,} {i['mode']:>6} {i['num_leaves']:>7} {i['build_seconds']:>8} {i['recall_at_10']:>10} "
              f"{i['scann_queries_per_s']:>10,} {i['brute_force_queries_per_s']:>10,} {e['memory']['peak_used_gib']:>9}")
    return 0


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
