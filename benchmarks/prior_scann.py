"""ScaNN with a popularity prior served: its recall against exact scores, with and without the prior's column.

    python benchmarks/prior_scann.py                        # 200K and 1M candidates x 128 dimensions
    python benchmarks/prior_scann.py --sizes 100000         # a quick look

`--popularity-prior BETA` (``ModelConfig.popularity_prior``) serves q . c +
BETA x log(1 + the candidate's training count) as one more column of each
tower (scaleout.train.served_columns: ``ServingPrior`` and ``log_popularity``), so the
index that `scaleout index` builds holds dim + 1 columns, the last on a scale of
its own. ScaNN's anisotropic hashing quantizes the columns in blocks
(``IndexConfig.dims_per_block``) and its tree partitions by the whole vector;
this script measures what the extra column costs the default index.

For each size N: clustered candidate embeddings and 1,000 queries from the
ANN suite's generator (scaleout.bench.datasets.synthetic_vectors: 2,000
centres, log-normal norms) and power-law training counts (Zipf, --zipf; a
random candidate order). For each --shares value s, beta is set so that the
prior's spread over the candidates, beta x std(log(1 + count)), is s times
the spread of the query-candidate scores (s = 0: no prior column; on
ml-100k the quality preset with beta 0.2 is at about s = 0.17). Then the
ScaNN index of the default IndexConfig on the candidates with the column
appended (the queries with beta), searched with its default settings for the
top 10 and 100, against brute force on the same vectors: recall@k, queries/s
of a batch, and the share of the exact top 10 that the prior changes (so a
prior that changes nothing is not mistaken for one ScaNN handles well).

Figures go to stdout and benchmarks/results/prior_scann.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401
from scaleout.bench.datasets import synthetic_vectors  # noqa: E402
from scaleout.fsutil import write_json  # noqa: E402

QUERIES, SEED, KS = 1_000, 0, (10, 100)


def training_counts(n: int, exponent: float, seed: int = SEED) -> np.ndarray:
    """[n] int64: a power law's counts (Zipf with ``exponent``, less one, so that some candidates were never
    seen), in a random candidate order."""
    rng = np.random.default_rng([seed, n])
    return np.minimum(rng.zipf(exponent, n) - 1, 10**9)


def with_prior(candidates: np.ndarray, queries: np.ndarray, counts: np.ndarray, beta: float):
    """The vectors a served prior gives the index and the queries: log(1 + count) after each candidate's
    columns, beta after each query's (``log_popularity``, ``ServingPrior``)."""
    column = np.log1p(counts.astype(np.float64)).astype(np.float32)[:, None]
    return (np.hstack([candidates, column]),
            np.hstack([queries, np.full((len(queries), 1), beta, np.float32)]))


def beta_for_share(candidates: np.ndarray, queries: np.ndarray, counts: np.ndarray, share: float,
                   sample: int = 100_000) -> float:
    """beta such that beta x std(log(1 + count)) is ``share`` x the std of the query-candidate scores (over
    the queries and up to ``sample`` candidates)."""
    rows = candidates[:sample]
    spread = float(np.std(queries @ rows.T))
    return share * spread / float(np.std(np.log1p(counts.astype(np.float64))))


def overlap(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` that the row of ``got`` holds (ids, any order)."""
    return float(np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got, truth)]))


def measure(n: int, dim: int, shares, exponent: float, index_cfg=None) -> dict:
    from scaleout.config import IndexConfig
    from scaleout.index.brute_force import BruteForce
    from scaleout.index.scann import Scann

    candidates, queries = synthetic_vectors(n, dim, QUERIES)
    counts = training_counts(n, exponent)
    ids = np.char.add("c", np.arange(n).astype(str))
    def exact_top(c: np.ndarray, q: np.ndarray) -> np.ndarray:  # [queries, max(KS)] ids, best first
        return BruteForce().build(ids, c).search(q, max(KS))[1]

    plain = exact_top(candidates, queries)  # the exact top, no prior
    rows = []
    for share in shares:
        beta = beta_for_share(candidates, queries, counts, share) if share else 0.0
        c, q = with_prior(candidates, queries, counts, beta) if share else (candidates, queries)
        exact = exact_top(c, q) if share else plain
        start = time.monotonic()
        scann = Scann(index_cfg or IndexConfig()).build(ids, c)
        row = {"share": share, "beta": round(beta, 4), "dim": c.shape[1], "mode": scann.mode,
               "num_leaves": scann.num_leaves, "build_seconds": round(time.monotonic() - start, 1)}
        for k in KS:
            truth = exact[:, :k]
            start = time.monotonic()
            _, got = scann.search(q, k)
            row[f"recall@{k}"] = round(overlap(got, truth), 4)
            row[f"scann_queries_per_s@{k}"] = round(len(q) / (time.monotonic() - start))
            row[f"search@{k}"] = scann.search_settings(k)
            if k == 10:
                row["exact_top10_changed_by_prior"] = round(1.0 - overlap(truth, plain[:, :10]), 4)
        print(f"{n:>10,} candidates, prior share {share:<4} (beta {beta:.3f}, {c.shape[1]} dims, {scann.mode}): "
              f"recall@10 {row['recall@10']:.4f}, @100 {row['recall@100']:.4f}; "
              f"{row['scann_queries_per_s@10']:,} queries/s at 10; the prior changes "
              f"{row['exact_top10_changed_by_prior']:.0%} of the exact top 10", flush=True)
        rows.append(row)
    return {"candidates": n, "dim": dim, "zipf": exponent, "queries": QUERIES,
            "counts": {"never_seen": float(np.mean(counts == 0)), "max": int(counts.max()),
                       "std_log1p": round(float(np.std(np.log1p(counts.astype(np.float64)))), 3)},
            "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128, help="the towers' dimension (the quality preset's)")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.5],
                        help="the prior's spread as a share of the scores' (0: no prior column)")
    parser.add_argument("--zipf", type=float, default=1.5, help="the exponent of the counts' power law")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "prior_scann.json")
    args = parser.parse_args()
    from scaleout.bench.measure import machine

    results = {"machine": machine(), "sizes": [measure(n, args.dim, args.shares, args.zipf) for n in args.sizes]}
    write_json(args.out, results)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
