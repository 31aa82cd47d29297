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
                 batch: int = 2048) -> dict[str, float]:
    """Hit rate and NDCG per test interaction over the full catalogue.

    ``score_users(users [b] int64) -> [b, n_items] float32`` scores; with
    ``seen``, each user's seen items (other than the true one) are ranked last.
    A test row whose item is outside the candidates counts as a miss.
    """
    n = len(test.users)
    hits = {k: 0.0 for k in ks}
    gains = {k: 0.0 for k in ndcg_ks}
    valid = test.items >= 0
    for start in range(0, n, batch):
        users, items = test.users[start:start + batch], test.items[start:start + batch]
        ok = valid[start:start + batch]
        users, items = users[ok], items[ok]
        scores = np.array(score_users(users), dtype=np.float32, copy=True)
        true = scores[np.arange(len(items)), items].copy()
        if seen is not None:
            mask = seen[np.maximum(users, 0)].toarray().astype(bool)
            mask[users < 0] = False
            mask[np.arange(len(items)), items] = False
            scores[mask] = -np.inf
        rank = (scores > true[:, None]).sum(axis=1)
        for k in ks:
            hits[k] += float((rank < k).sum())
        for k in ndcg_ks:
            gains[k] += float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).sum())
    out = {f"recall@{k}": hits[k] / n for k in ks}
    out.update({f"ndcg@{k}": gains[k] / n for k in ndcg_ks})
    return out


def evaluate_scores(score_users, data: Data) -> dict[str, dict[str, float]]:
    """Both protocols for one scorer."""
    seen = data.matrix(data.train)
    return {"tutorial": rank_metrics(score_users, data.test, None),
            "exclude_seen": rank_metrics(score_users, data.test, seen)}
