"""Baselines of the honest evaluation, on the same split as the model: popularity, EASE and iALS.

popularity (training counts, the same list for everyone), EASE (closed form,
Steck 2019) and iALS (the ``implicit`` library); their settings are chosen on a
validation cut of the training split (10% of each user's training rows,
seeded), never on the test split. Ties in a baseline's scores are broken by
popularity so a row of equal scores is not counted as a hit.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import scipy.sparse as sp

from scaleout.evaluate.protocols import Data, Split, evaluate_scores, rank_metrics
from scaleout.names import BASELINES

log = logging.getLogger(__name__)

EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0)
IALS_GRID = ({"factors": 64, "regularization": 0.01}, {"factors": 64, "regularization": 0.1},
             {"factors": 128, "regularization": 0.1}, {"factors": 32, "regularization": 0.1})


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """[n_items]: training counts, ties broken by item row (a strict order)."""
    counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float64)
    order = np.lexsort((np.arange(len(counts)), -counts))
    scores = np.empty(len(counts), np.float64)
    scores[order] = np.arange(len(counts), 0, -1)
    return scores


def ease(train: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE item-item weights [n_items, n_items] with a zero diagonal."""
    gram = (train.T @ train).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def validation_cut(data: Data, fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """(fit, validation) of the training split: ``fraction`` of each user's rows held out."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(data.train.users)) < fraction
    return (Split(data.train.users[~held], data.train.items[~held]),
            Split(data.train.users[held], data.train.items[held]))


def ease_bytes(n_items: int) -> int:
    """Peak memory of fitting EASE: three dense float64 [n_items, n_items] matrices (the Gram matrix, its
    inverse and the weights)."""
    return 3 * 8 * n_items * n_items


def memory_limit(max_gib: float = 0.0) -> int:
    """Bytes a baseline may take: ``max_gib``, else a third of this machine's memory."""
    if max_gib:
        return int(max_gib * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 3


def baselines(data: Data, which: tuple[str, ...] = BASELINES, population_users: int = 0,
              ease_max_gib: float = 0.0) -> dict[str, dict]:
    """Each baseline's metrics under both protocols, with the setting chosen on validation (and 95% intervals
    when the test split is a sample of ``population_users`` users). A baseline that cannot fit in memory is
    skipped with a note saying what it would need (EASE: three item x item matrices; see ``ease_bytes``)."""
    train = data.matrix(data.train)
    pop = popularity_scores(train)
    fit, val = validation_cut(data)
    fit_m = data.matrix(fit)
    out = {}
    n = population_users
    if "popularity" in which:
        out["popularity"] = {"setting": "training counts",
                             **evaluate_scores(lambda u: np.tile(pop, (len(u), 1)), data, pop, n,
                                               label="quality, popularity")}
    if "ease" in which:
        need, limit = ease_bytes(data.shape[1]), memory_limit(ease_max_gib)
        if need > limit:
            out["ease"] = {"skipped": f"EASE needs about {need / 2**30:.1f} GiB for its {data.shape[1]:,} x "
                                      f"{data.shape[1]:,} item matrices; the limit is {limit / 2**30:.1f} GiB "
                                      "(--ease-max-gib; default a third of this machine's memory)"}
            log.warning("quality: %s", out["ease"]["skipped"])
        else:
            best = _choose(EASE_LAMBDAS, lambda lam: _ease_scorer(fit_m, lam), data, fit_m, val, pop)
            out["ease"] = {"setting": {"lambda": best},
                           **evaluate_scores(_ease_scorer(train, best), data, pop, n, label="quality, EASE")}
    if "ials" in which:
        best = _choose(IALS_GRID, lambda s: _ials_scorer(fit_m, s), data, fit_m, val, pop)
        out["ials"] = {"setting": best,
                       **evaluate_scores(_ials_scorer(train, best), data, pop, n, label="quality, iALS")}
    return out


def _choose(grid, make_scorer, data: Data, fit: sp.csr_matrix, val: Split, tiebreak: np.ndarray):
    """The grid point with the best validation recall@10, seen (fit) items excluded."""
    scored = []
    for setting in grid:
        start = time.monotonic()
        r = rank_metrics(make_scorer(setting), val, fit, ks=(10,), ndcg_ks=(), tiebreak=tiebreak)["recall@10"]
        log.info("validation: %s recall@10 %.4f (%.1f s)", setting, r, time.monotonic() - start)
        scored.append((r, setting))
    return max(scored, key=lambda t: t[0])[1]


def _ease_scorer(train: sp.csr_matrix, lam: float):
    """Scores of EASE; ties (for a user outside the vocabulary: every item) are broken by the ranking's tiebreak."""
    b = ease(train, lam)

    def score(users):
        rows = train[np.maximum(users, 0)].toarray() @ b
        rows[users < 0] = 0.0
        return rows
    return score


def _ials_scorer(train: sp.csr_matrix, setting: dict):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit's advice (it warns otherwise, and runs up to 10x slower): BLAS on one thread while it fits
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=setting["factors"], regularization=setting["regularization"],
                                        alpha=setting.get("alpha", 1.0), iterations=setting.get("iterations", 15),
                                        random_state=42, num_threads=1)
        model.fit(train.tocsr(), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def score(u):
        rows = users[np.maximum(u, 0)] @ items.T
        rows[u < 0] = 0.0
        return rows
    return score
