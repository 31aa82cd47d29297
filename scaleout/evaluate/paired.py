"""The model against a baseline on the same test users: the ratio of their metrics, with a paired interval.

A metric of scaleout.evaluate.protocols is a sum of per-user hits over the
test rows, so on the same test split the model's value over a baseline's is
R = A / B, A and B the two sums over users (the rows cancel). Each user's
hits under both methods go together: a user who is easy for one is easy for
the other, and the interval of R taken over users *paired* is narrower than
the two methods' own intervals would suggest (under half the width of an
unpaired bootstrap's on the simulated users of tests/evaluate/test_paired.py).

The interval is the delta method's on log R, users taken as independent
draws: log R moves with A / A0 - B / B0, whose variance over m users is
m x the sample variance of d_u = a_u / A - b_u / B (a_u, b_u: user u's sums).
With ``population_users`` (a sample of m of that many test users, drawn
without replacement, as ``scaleout quality --sample-users`` draws them) the
finite-population correction (1 - m / N) applies, and the interval is of the
whole test split's ratio; without it, of the ratio over users like these.
The interval is over test users only: a model trained again from another
seed moves too (``benchmarks/quality_preset.py --seeds``).
"""

from __future__ import annotations

import math

import numpy as np

PAIRED_METRICS = ("recall@10", "recall@100")
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def paired_ratio(ours: np.ndarray, theirs: np.ndarray, population_users: int = 0, z: float = Z95) -> dict:
    """``{"ratio": A / B, "ci95": [low, high]}`` for per-user sums ``ours`` and ``theirs`` (one entry per test
    user, the same users in the same order). Where B is 0 the ratio is None; where A is 0 it is 0 and the
    interval None (no log to take); with one user the interval is the ratio itself."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"paired sums over different users: {ours.shape} against {theirs.shape}")
    a, b, m = float(ours.sum()), float(theirs.sum()), len(ours)
    if b <= 0.0:
        return {"ratio": None, "ci95": None}
    if a <= 0.0:
        return {"ratio": 0.0, "ci95": None}
    ratio = a / b
    d = ours / a - theirs / b
    var = m * float(d.var(ddof=1)) if m > 1 else 0.0
    if population_users:
        var *= max(0.0, 1.0 - m / population_users)
    half = z * math.sqrt(var)
    return {"ratio": ratio, "ci95": [ratio * math.exp(-half), ratio * math.exp(half)]}


def paired_comparison(ours: dict, theirs: dict, population_users: int = 0,
                      metrics: tuple[str, ...] = PAIRED_METRICS) -> dict[str, dict[str, dict]]:
    """``{protocol: {metric: paired_ratio}}`` for two ``rank_protocols(..., per_user=True)["per_user"]`` of the
    same test split (``rows``: each user's test rows; per protocol, per metric, each user's sum), over the
    protocols both hold."""
    if not np.array_equal(ours["rows"], theirs["rows"]):
        raise ValueError("paired sums of different test splits: the users' test rows differ")
    return {protocol: {metric: paired_ratio(sums[metric], theirs[protocol][metric], population_users)
                       for metric in metrics}
            for protocol, sums in ours.items() if protocol != "rows" and protocol in theirs}


def take_per_user(methods: dict[str, dict]) -> dict[str, dict]:
    """Each method's per-user sums (``evaluate_scores(..., per_user=True)``), taken out of its metrics, which
    a report's JSON keeps without them; a method without them (one skipped) is left out."""
    return {name: m.pop("per_user") for name, m in methods.items() if "per_user" in m}


def over_each(ours: dict, theirs: dict[str, dict], population_users: int = 0) -> dict[str, dict]:
    """``{name: paired_comparison(ours, theirs[name])}``: one method over each of the others."""
    return {name: paired_comparison(ours, sums, population_users) for name, sums in theirs.items()}


def ratio_text(paired: dict) -> str:
    """``1.020 (0.981-1.061)``; ``n/a`` where the baseline has no hits."""
    if paired["ratio"] is None:
        return "n/a (the baseline has no hits)"
    if paired["ci95"] is None:
        return f"{paired['ratio']:.3f}"
    low, high = paired["ci95"]
    return f"{paired['ratio']:.3f} ({low:.3f}-{high:.3f})"
