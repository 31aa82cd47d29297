"""FactorizedTopK's top-k accuracy two ways, side by side: TFRS's metric and scaleout's RankTopK.

    python benchmarks/rank_top_k.py                      # 200,000 queries x 26,744 candidates, 32 dims
    python benchmarks/rank_top_k.py --queries 20000 --dim 128

Random candidate embeddings (seeded); each query is its positive, a
catalogue row as at evaluation, plus noise as large (so that positives rank
near the top, as a trained model's do). Both metrics see the same batches of 4,096
queries:

- TFRS: ``tfrs.metrics.FactorizedTopK`` over the candidates as a dataset
  (batches of 8,192: a matmul, a top-100 and a merge each), scored by value;
- RankTopK (``scaleout.train.ranking``): each positive's rank, block by block,
  its own row left out and ties shared, given the positives' rows.

Prints seconds (the first batch, which traces, left out) and top-k accuracies
of each and the ratio, and the queries whose positive's own row TFRS ranks
above it (the elementwise product and the matmul round apart). Writes
benchmarks/results/rank_top_k.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.bench.measure import machine
from scaleout.fsutil import write_json

RESULTS = Path(__file__).parent / "results" / "rank_top_k.json"
KS = (1, 5, 10, 50, 100)
BATCH = 4096


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--candidates", type=int, default=26_744)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    from scaleout.tfenv import tf, tfrs
    from scaleout.train.ranking import RankTopK

    rng = np.random.default_rng(0)
    candidates = tf.constant(rng.standard_normal((args.candidates, args.dim)).astype(np.float32))
    rows = rng.integers(0, args.candidates, args.queries)
    queries = (candidates.numpy()[rows] + rng.standard_normal((args.queries, args.dim))).astype(np.float32)
    ours = RankTopK(lambda: candidates, args.candidates, KS)
    theirs = tfrs.metrics.FactorizedTopK(candidates=tf.data.Dataset.from_tensor_slices(candidates).batch(8192), ks=KS)

    @tf.function
    def step_ours(q, p, r):
        ours.update_state(q, p, true_candidate_ids=r)

    @tf.function
    def step_theirs(q, p):
        theirs.update_state(q, p)

    seconds = {"tfrs": 0.0, "rank_top_k": 0.0}
    own_above = 0
    for start in range(0, args.queries, BATCH):
        q = tf.constant(queries[start:start + BATCH])
        r = tf.constant(rows[start:start + BATCH])
        p = tf.gather(candidates, r)
        t = time.perf_counter()
        step_theirs(q, p)
        if start:  # the first batch traces each function: not timed
            seconds["tfrs"] += time.perf_counter() - t
        t = time.perf_counter()
        step_ours(q, p, r)
        if start:
            seconds["rank_top_k"] += time.perf_counter() - t
        own = tf.matmul(q, candidates, transpose_b=True).numpy()[np.arange(len(r)), r.numpy()]
        own_above += int((own > tf.reduce_sum(q * p, axis=1).numpy()).sum())
        print(f"{min(start + BATCH, args.queries):,} of {args.queries:,} queries", flush=True)
    result = {
        "machine": machine(), "queries": args.queries, "candidates": args.candidates, "dim": args.dim,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "ratio": round(seconds["tfrs"] / seconds["rank_top_k"], 2),
        "top_k": {"tfrs": dict(zip(map(str, KS), (round(float(v), 5) for v in theirs.result()))),
                  "rank_top_k": dict(zip(map(str, KS), (round(float(v), 5) for v in ours.result())))},
        "own_row_above_its_positive": round(own_above / args.queries, 4),
    }
    print(f"{'':<12}{'seconds':>9}" + "".join(f"{'top-' + str(k):>10}" for k in KS))
    for name in ("tfrs", "rank_top_k"):
        print(f"{name:<12}{result['seconds'][name]:>9.2f}" + "".join(f"{result['top_k'][name][str(k)]:>10.5f}"
                                                                     for k in KS))
    print(f"RankTopK {result['ratio']}x faster; the own row scores above its positive (TFRS's matmul against "
          f"the elementwise product) for {result['own_row_above_its_positive']:.1%} of queries")
    write_json(Path(args.out), result)
    return result


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
