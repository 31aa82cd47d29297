"""Users held out of training, served from some of their items: the split, the baselines' lists, the recall.

A user the model never saw gives ``n`` of the items they interacted with: their first ``n`` (oldest first),
or any ``n`` (a random order); every other item of theirs that is a candidate is what a good
recommendation finds. The recall of one user at k is
the share of their later items in the top k (the given items left out of it), averaged over the
held-out users with a 95% interval over users (benchmarks/held_out_users.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaleout.errors import ConfigError


@dataclass(frozen=True)
class HeldOutUser:
    user_id: str
    given: tuple[str, ...]  # what the request sends
    later: frozenset[str]  # the rest of the user's items that are candidates: what should come back


def hold_out(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """[n] the distinct ids among ``users`` drawn, without replacement, to be left out of training."""
    distinct = np.unique(users)
    count = int(round(fraction * len(distinct)))
    if not 0 < count < len(distinct):
        raise ConfigError(f"holding out {fraction} of {len(distinct)} users leaves {count} held out; "
                          "expected at least one held out and one kept")
    return np.sort(np.random.default_rng(seed).choice(distinct, count, replace=False))


def held_out_users(users: np.ndarray, items: np.ndarray, order_by: np.ndarray, held: np.ndarray,
                   candidates: set[str], given: int) -> tuple[list[HeldOutUser], int]:
    """(each held-out user with at least one item after the ``given`` first, how many interactions were
    dropped because their item is not a candidate: no method can recommend it). ``users``/``items``: [n]
    events; ``order_by``: [n], the order of a user's items (timestamps: the first ones are given; a random
    permutation: any)."""
    mine = np.isin(users, held)
    users, items, order_by = users[mine], items[mine].astype(str), order_by[mine]
    order = np.lexsort((order_by, users))
    users, items = users[order], items[order]
    known = np.fromiter((i in candidates for i in items), bool, len(items))
    out = []
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], len(users)]):
        theirs = list(dict.fromkeys(items[start:stop][known[start:stop]]))  # first interactions, in order
        first, rest = theirs[:given], frozenset(theirs[given:])
        if len(first) == given and rest:
            out.append(HeldOutUser(str(users[start]), tuple(first), rest))
    return out, int((~known).sum())


def top_k_excluding(scores: np.ndarray, ids: np.ndarray, exclude: set[str], k: int) -> list[str]:
    """The ``k`` best ``ids`` by ``scores`` ([n_items], higher first, ties by position), none of ``exclude``."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [m for m in ids[order[:k + len(exclude)]] if m not in exclude][:k]


def recall(recommended: list[list[str]], users: list[HeldOutUser], ks: tuple[int, ...]) -> dict:
    """{"recall@k": mean over users of |top k & later| / |later|, "ci95": {"recall@k": half-width}}."""
    if len(recommended) != len(users):
        raise ValueError(f"{len(recommended)} lists of recommendations for {len(users)} users")
    out: dict = {"ci95": {}}
    for k in ks:
        each = np.array([len(set(r[:k]) & u.later) / len(u.later) for r, u in zip(recommended, users)])
        out[f"recall@{k}"] = float(each.mean())
        out["ci95"][f"recall@{k}"] = float(1.96 * each.std(ddof=1) / np.sqrt(len(each))) if len(each) > 1 else 0.0
    return out


def given_rows(given: list[list[int]], n_items: int):
    """[users, n_items] CSR of ones: each user's given items (item rows)."""
    import scipy.sparse as sp

    items = np.concatenate([np.empty(0, np.int64), *map(np.asarray, given)]).astype(np.int64)  # [] gives 0 rows
    return sp.csr_matrix((np.ones(len(items), np.float32), items,
                          np.r_[0, np.cumsum([len(g) for g in given])]), shape=(len(given), n_items))


def ease_folded_in(weights: np.ndarray, rows) -> np.ndarray:
    """[users, n_items] EASE's scores for users it was not fitted on: their ``rows`` (``given_rows``) through its
    item x item ``weights``, as for a training user."""
    return np.asarray(rows @ weights)


def ials_folded_in(model, rows) -> np.ndarray:
    """[users, n_items] iALS's scores for users it was not fitted on: each user's factors solved from their ``rows``
    (``given_rows``) against the fitted item factors, the least-squares step of the fit itself (implicit's
    ``recalculate_user``), then scored against every item."""
    factors = np.asarray(model.recalculate_user(np.arange(rows.shape[0]), rows))
    return factors @ np.asarray(model.item_factors).T
