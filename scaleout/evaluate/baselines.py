"""Baselines of the honest evaluation, on the same split as the model: popularity, EASE and iALS.

popularity (training counts, the same list for everyone), EASE (closed form,
Steck 2019) and iALS (the ``implicit`` library); their settings are chosen on a
validation cut of the training split (10% of each user's training rows,
seeded; ranked for at most VALIDATION_USERS users), never on the test split.
Ties in a baseline's scores are broken by popularity so a row of equal scores
is not counted as a hit.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import scipy.sparse as sp

from scaleout.evaluate.protocols import Data, Split, evaluate_scores, rank_metrics, sample_users
from scaleout.names import BASELINES
from scaleout.train.ials import ials_fit

log = logging.getLogger(__name__)

# Each setting tried is scored on the validation rows of at most this many users, drawn once (seed 0), so that
# choosing costs the fits, not the ranking, on large data: at 138,491 users (MovieLens 20M's shape) ranking the whole
# cut took about as long as one iALS fit (106 s against 128 s, with other work sharing the cores); 20,000 users'
# recall@10 has a standard error of about 0.001. ml-100k (943 users) and the 6,040 users of MovieLens 1M's shape
# are ranked whole.
VALIDATION_USERS = 20_000
VALIDATION_METRIC = "validation_recall@10"  # what each setting tried is scored by, in quality.json
EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0)  # a best at either end is followed past it (past_the_edges)
# iALS: implicit's ALS at the quality preset's 128 dimensions, 15 iterations. Its two weights, alpha (on the
# observed entries) and the L2, are searched on the validation cut by climbing a lattice from alpha 3, L2 30:
# alpha steps by 1.5x and the L2's ratio to alpha by sqrt(2)x, moving to the best of six neighbours while one
# is better (at most IALS_MAX_FITS fits). What matters most is the ratio, and its best value moves with alpha and
# with the data (ml-100k: 10 at alpha 3; synthetic data at MovieLens 1M's shape: 20 at alpha 2), so a few
# fixed points miss it: the four settings used before 2026-12-05 (32-128 factors, L2 0.01-0.1, alpha 1) reached a
# validation recall@10 of 0.146 on ml-100k where the climb reaches 0.158 (test, seen excluded: 0.1588 -> 0.1764).
IALS_FACTORS = 128
IALS_START = (3.0, 10.0)  # (alpha, L2 / alpha)
IALS_STEPS = (1.5, 2**0.5)
IALS_MAX_FITS = 16
# The climb's moves: each axis, and the diagonal along which iALS's best settings lie on both data sets measured
# (alpha up one step with the ratio down one: the L2 nearly still, x1.06). Whole lattices of the validation recall
# (alpha 3 x 1.5^-3..3, ratio 10 x sqrt(2)^-3..5; 2026-12-05): with the four axis moves alone the climb stopped at
# 0.1372 on synthetic data at MovieLens 1M's shape (alpha 4.5, L2 63.6), below the lattice's best, 0.1395 (alpha 2,
# L2 40), which these six reach in 13 fits; on ml-100k both stop at alpha 3, L2 30 (0.1583; the lattice's best 0.1590).
CLIMB_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, 1), (1, -1))


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
              ease_max_gib: float = 0.0, per_user: bool = False) -> dict[str, dict]:
    """Each baseline's metrics under both protocols, with the setting chosen on validation (and 95% intervals
    when the test split is a sample of ``population_users`` users; with ``per_user``, each user's sums as
    ``evaluate_scores`` keeps them). A baseline that cannot fit in memory is skipped with a note saying what it
    would need (EASE: three item x item matrices; see ``ease_bytes``)."""
    train = data.matrix(data.train)
    pop, fit_m, val, chosen_on = validation_setup(data, train)
    if chosen_on["users"] < chosen_on["of_users"]:
        log.info("quality: the baselines' settings are chosen on the validation rows of %s of its %s users",
                 f"{chosen_on['users']:,}", f"{chosen_on['of_users']:,}")
    out = {}
    n = population_users
    if "popularity" in which:
        out["popularity"] = {"setting": "training counts",
                             **evaluate_scores(lambda u: np.tile(pop, (len(u), 1)), data, pop, n,
                                               label="quality, popularity", per_user=per_user)}
    if "ease" in which:
        need, limit = ease_bytes(data.shape[1]), memory_limit(ease_max_gib)
        if need > limit:
            out["ease"] = {"skipped": f"EASE needs about {need / 2**30:.1f} GiB for its {data.shape[1]:,} x "
                                      f"{data.shape[1]:,} item matrices; the limit is {limit / 2**30:.1f} GiB "
                                      "(--ease-max-gib; default a third of this machine's memory)"}
            log.warning("quality: %s", out["ease"]["skipped"])
        else:
            best, scores = choose_ease(fit_m, val, pop)
            out["ease"] = {"setting": {"lambda": best},
                           "tried": tried_settings({lam: {"lambda": lam} for lam in sorted(scores)}, scores),
                           "chosen_on": chosen_on,
                           **evaluate_scores(_ease_scorer(train, best), data, pop, n, label="quality, EASE",
                                              per_user=per_user)}
    if "ials" in which:
        here, scores = choose_ials(fit_m, val, pop)
        best = ials_setting(here)
        out["ials"] = {"setting": best, "tried": tried_settings({p: ials_setting(p) for p in scores}, scores),
                       "chosen_on": chosen_on,
                       **evaluate_scores(_ials_scorer(train, best), data, pop, n, label="quality, iALS",
                                          per_user=per_user)}
    return out


def validation_setup(data: Data, train: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix, Split, dict]:
    """What every setting tried is scored with, ``train`` being the training split's matrix: (the tiebreak,
    popularity on it; the fit matrix, the training split less the validation cut; the validation rows, of at most
    VALIDATION_USERS users; ``chosen_on``, {"users": those ranked, "of_users": the cut's})."""
    pop = popularity_scores(train)
    fit, val = validation_cut(data)
    val, val_users = sample_users(val, VALIDATION_USERS)
    return pop, data.matrix(fit), val, {"users": int(len(np.unique(val.users))), "of_users": int(val_users)}


def choose_ease(fit: sp.csr_matrix, val: Split, tiebreak: np.ndarray) -> tuple[float, dict]:
    """EASE's lambda by validation recall@10 (``validation_setup``'s parts): (the best, every lambda scored)."""
    return past_the_edges(EASE_LAMBDAS, lambda lam: _validation_recall(
        lam, lambda x: _ease_scorer(fit, x), fit, val, tiebreak))


def choose_ials(fit: sp.csr_matrix, val: Split, tiebreak: np.ndarray) -> tuple[tuple[int, int], dict]:
    """iALS's setting by validation recall@10, climbing its lattice: (where the climb stopped, every point scored);
    ``ials_setting`` turns a point into the setting."""
    return climb(lambda step: _validation_recall(ials_setting(step), lambda s: _ials_scorer(fit, s), fit, val,
                                                 tiebreak))


def tried_settings(settings: dict, scores: dict) -> list[dict]:
    """Each setting scored on the validation cut, in ``settings``' order, with its recall@10 (None where the fit
    diverged): what the choice was made among, for the report and quality.json."""
    return [{**setting, VALIDATION_METRIC: scores[key] if np.isfinite(scores[key]) else None}
            for key, setting in settings.items()]


def _validation_recall(setting, make_scorer, fit: sp.csr_matrix, val: Split, tiebreak: np.ndarray) -> float:
    """Recall@10 on the validation cut, the fit's items excluded."""
    start = time.monotonic()
    r = rank_metrics(make_scorer(setting), val, fit, ks=(10,), ndcg_ks=(), tiebreak=tiebreak)["recall@10"]
    log.info("validation: %s recall@10 %.4f (%.1f s)", setting, r, time.monotonic() - start)
    return r


def past_the_edges(values, score_of, factor: float = 2.0, most: int = 4) -> tuple[float, dict]:
    """The value of ``values`` (ascending) with the best score, where a best at the first or the last value is
    followed past it: the value ``factor`` beyond is scored, and so on while each beats the last (at most ``most``
    more). A data set whose best EASE lambda is above 1,000 gets it instead of the grid's edge. (best, every value
    scored with its score); NaN scores are the worst."""
    scores = {}
    for value in values:
        _record(scores, value, score_of)
    for _ in range(most):
        ordered = sorted(scores)
        best = max(ordered, key=scores.__getitem__)
        if len(ordered) > 1 and best == ordered[-1]:
            _record(scores, best * factor, score_of)
        elif len(ordered) > 1 and best == ordered[0]:
            _record(scores, best / factor, score_of)
        else:
            break
    return max(sorted(scores), key=scores.__getitem__), scores


def _record(scores: dict, key, score_of) -> None:
    """scores[key] = score_of(key), a NaN score (a fit that diverged) recorded as the worst."""
    value = float(score_of(key))
    scores[key] = value if value == value else -np.inf


def ials_setting(step: tuple[int, int]) -> dict:
    """iALS's setting ``step`` = (alpha's, the ratio's) steps away from IALS_START on the lattice ``climb`` walks."""
    alpha = IALS_START[0] * IALS_STEPS[0] ** step[0]
    ratio = IALS_START[1] * IALS_STEPS[1] ** step[1]
    return {"factors": IALS_FACTORS, "alpha": float(f"{alpha:.4g}"), "regularization": float(f"{alpha * ratio:.4g}")}


def climb(score_of, max_fits: int = IALS_MAX_FITS, moves=CLIMB_MOVES) -> tuple[tuple[int, int], dict]:
    """Hill-climbing on the integer lattice from (0, 0): score the neighbours of where it stands (``moves`` away),
    move to the best of them while it beats the place it leaves, stop there or after ``max_fits`` scores (a NaN score
    is the worst). Each move gains, so it never comes back: (where it stopped, every point scored with its score)."""
    scores: dict[tuple[int, int], float] = {}
    here = (0, 0)
    _record(scores, here, score_of)
    for _ in range(max_fits):  # a move needs a strictly better point, so there are fewer moves than points scored
        near = [(here[0] + da, here[1] + dr) for da, dr in moves]
        for point in near:
            if point not in scores and len(scores) < max_fits:
                _record(scores, point, score_of)
        best = max((p for p in near if p in scores), key=scores.__getitem__, default=here)
        if scores[best] <= scores[here]:
            break
        here = best
    return here, scores


def _ease_scorer(train: sp.csr_matrix, lam: float):
    """Scores of EASE; ties (for a user outside the vocabulary: every item) are broken by the ranking's tiebreak."""
    b = ease(train, lam)

    def score(users):
        rows = train[np.maximum(users, 0)].toarray() @ b
        rows[users < 0] = 0.0
        return rows
    return score


def _ials_scorer(train: sp.csr_matrix, setting: dict):
    model = ials_fit(train, setting)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def score(u):
        rows = users[np.maximum(u, 0)] @ items.T
        rows[u < 0] = 0.0
        return rows
    return score
