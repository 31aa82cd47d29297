"""Honest evaluation's protocols: every test interaction ranked over the full catalogue.

Two protocols, each reporting hit rate (recall) at 1, 5, 10, 50, 100 and NDCG
at 10 and 100 per test interaction (one relevant item each):

  tutorial       every candidate ranked (TFRS FactorizedTopK's protocol: a hit
                 when fewer than k candidates score strictly above the true one)
  exclude_seen   the user's training items removed from the ranking first
                 (the tutorial's own suggestion); the true item is never removed

A scorer is a function ``users [b] int64 -> [b, n_items]`` scores over rows
of the user vocabulary (-1: a user outside it) and of the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import iter_batches
from scaleout.names import MOVIE_ID, USER_ID

KS = (1, 5, 10, 50, 100)
NDCG_KS = (10, 100)
PROTOCOLS = ("tutorial", "exclude_seen")


@dataclass
class Split:
    """Interactions coded as rows of the user and item vocabularies; -1 for an id outside them."""

    users: np.ndarray  # [n] int64
    items: np.ndarray  # [n] int64


@dataclass
class Data:
    user_ids: np.ndarray  # [n_users] str
    item_ids: np.ndarray  # [n_items] str (the candidates)
    train: Split
    test: Split

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    def matrix(self, split: Split) -> sp.csr_matrix:
        """[n_users, n_items] binary interactions (duplicates counted once)."""
        keep = (split.users >= 0) & (split.items >= 0)
        m = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (split.users[keep], split.items[keep])),
                          shape=self.shape)
        m.data[:] = 1.0
        return m


def load(dataset: Dataset) -> Data:
    """The train and test splits of a prepared dataset, coded against its user vocabulary and candidates."""
    user_ids = dataset.vocabulary(USER_ID)
    item_ids = dataset.candidates.column(MOVIE_ID).to_numpy(zero_copy_only=False).astype(str)
    user_row = {u: i for i, u in enumerate(user_ids)}
    item_row = {m: i for i, m in enumerate(item_ids)}
    splits = {}
    for name in ("train", "test"):
        users, items = [], []
        for batch in iter_batches(dataset.files(name), [USER_ID, MOVIE_ID], 65_536, 0, None):
            users.append(np.fromiter((user_row.get(u, -1) for u in np.asarray(batch[USER_ID]).astype(str)), np.int64))
            items.append(np.fromiter((item_row.get(m, -1) for m in np.asarray(batch[MOVIE_ID]).astype(str)), np.int64))
        splits[name] = Split(np.concatenate(users), np.concatenate(items))
    return Data(user_ids, item_ids, splits["train"], splits["test"])


def rank_metrics(score_users, test: Split, seen: sp.csr_matrix | None, ks=KS, ndcg_ks=NDCG_KS,
                 batch: int = 2048, tiebreak: np.ndarray | None = None) -> dict[str, float]:
    """Hit rate and NDCG per test interaction over the full catalogue, under one protocol.

    ``score_users(users [b] int64) -> [b, n_items]`` scores; with ``seen``, each
    user's seen items (other than the true one) are ranked last. A test row whose
    item is outside the candidates counts as a miss. ``tiebreak`` ([n_items],
    distinct values) orders items of equal score, higher first. See ``rank_protocols``.
    """
    name = "exclude_seen" if seen is not None else "tutorial"
    return rank_protocols(score_users, test, {name: seen}, ks, ndcg_ks, batch, tiebreak)[name]


def rank_protocols(score_users, test: Split, protocols: dict[str, sp.csr_matrix | None], ks=KS, ndcg_ks=NDCG_KS,
                   batch: int = 2048, tiebreak: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Hit rate and NDCG per test interaction under several protocols ({name: seen items or None}), scoring each
    test user once: test rows are grouped by user, ``batch`` users scored at a time, and every protocol ranks
    the rows of those users from the same scores.

    A row's rank counts the candidates scoring strictly above its true item (with
    ``tiebreak``: above, or equal and ahead on the tiebreak), the user's seen
    items left out under a protocol with ``seen`` (never the true item).
    """
    n = len(test.users)
    hits = {p: {k: 0.0 for k in ks} for p in protocols}
    gains = {p: {k: 0.0 for k in ndcg_ks} for p in protocols}
    keep = np.flatnonzero(test.items >= 0)  # an item outside the candidates is a miss: no rank to add
    order = keep[np.argsort(test.users[keep], kind="stable")]
    users_sorted, items_sorted = test.users[order], test.items[order]
    unique, first = np.unique(users_sorted, return_index=True)
    bounds = np.append(first, len(order))
    for u0 in range(0, len(unique), batch):
        users = unique[u0:u0 + batch]
        lo, hi = bounds[u0], bounds[min(u0 + batch, len(unique))]
        which = np.repeat(np.arange(len(users)), np.diff(bounds[u0:u0 + len(users) + 1]))  # row -> user in batch
        items = items_sorted[lo:hi]
        scores = np.asarray(score_users(users), dtype=np.float32)
        for name, seen in protocols.items():
            masked = scores
            if seen is not None:
                masked = scores.copy()
                mask = seen[np.maximum(users, 0)].toarray().astype(bool)
                mask[users < 0] = False
                masked[mask] = -np.inf  # the true item too: it is never counted above itself
            rank = _ranks(masked, scores[which, items], which, items, tiebreak, batch)
            for k in ks:
                hits[name][k] += float((rank < k).sum())
            for k in ndcg_ks:
                gains[name][k] += float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).sum())
    out = {}
    for name in protocols:
        out[name] = {f"recall@{k}": hits[name][k] / n for k in ks}
        out[name].update({f"ndcg@{k}": gains[name][k] / n for k in ndcg_ks})
    return out


def _ranks(scores: np.ndarray, true: np.ndarray, which: np.ndarray, items: np.ndarray,
           tiebreak: np.ndarray | None, block: int) -> np.ndarray:
    """Per test row: candidates of its user's ``scores`` row ranked above ``true``, ``block`` rows at a time."""
    rank = np.empty(len(which), np.int64)
    for r0 in range(0, len(which), block):
        rows = scores[which[r0:r0 + block]]
        t = true[r0:r0 + block, None]
        above = rows > t
        if tiebreak is not None:
            above |= (rows == t) & (tiebreak[None, :] > tiebreak[items[r0:r0 + block], None])
        rank[r0:r0 + block] = above.sum(axis=1)
    return rank


def evaluate_scores(score_users, data: Data, tiebreak: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Both protocols for one scorer, each test user scored once."""
    return rank_protocols(score_users, data.test, {"tutorial": None, "exclude_seen": data.matrix(data.train)},
                          tiebreak=tiebreak)
