"""Honest evaluation: every test interaction ranked over the full catalogue, beside simple baselines.

Two protocols, each reporting hit rate (recall) at 1, 5, 10, 50, 100 and NDCG
at 10 and 100 per test interaction (one relevant item each):

  tutorial       every candidate ranked (TFRS FactorizedTopK's protocol: a hit
                 when fewer than k candidates score strictly above the true one)
  exclude_seen   the user's training items removed from the ranking first
                 (the tutorial's own suggestion); the true item is never removed

Baselines on the same split: popularity (training counts, the same list for
everyone), EASE (closed form, Steck 2019) and iALS (the ``implicit`` library);
their settings are chosen on a validation cut of the training split (10% of
each user's training rows, seeded), never on the test split. Ties in a
baseline's scores are broken by popularity so a row of equal scores is not
counted as a hit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scaleout.data.dataset import Dataset
from scaleout.data.tfdata import iter_batches

log = logging.getLogger(__name__)

KS = (1, 5, 10, 50, 100)
NDCG_KS = (10, 100)
PROTOCOLS = ("tutorial", "exclude_seen")
EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0)
IALS_GRID = ({"factors": 64, "regularization": 0.01}, {"factors": 64, "regularization": 0.1},
             {"factors": 128, "regularization": 0.1}, {"factors": 32, "regularization": 0.1})


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
    user_ids = dataset.vocabulary("user_id")
    item_ids = dataset.candidates.column("movie_id").to_numpy(zero_copy_only=False).astype(str)
    user_row = {u: i for i, u in enumerate(user_ids)}
    item_row = {m: i for i, m in enumerate(item_ids)}
    splits = {}
    for name in ("train", "test"):
        users, items = [], []
        for batch in iter_batches(dataset.files(name), ["user_id", "movie_id"], 65_536, 0, None):
            users.append(np.fromiter((user_row.get(u, -1) for u in np.asarray(batch["user_id"]).astype(str)), np.int64))
            items.append(np.fromiter((item_row.get(m, -1) for m in np.asarray(batch["movie_id"]).astype(str)), np.int64))
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


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """[n_items]: training counts, ties broken by item row (a strict order)."""
    counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float64)
    order = np.lexsort((np.arange(len(counts)), -counts))
    scores = np.empty(len(counts), np.float64)
    scores[order] = np.arange(len(counts), 0, -1)
    return scores


def with_tiebreak(scores: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Scores with ties broken by popularity: adds less than half the smallest gap between distinct scores."""
    scores = scores.astype(np.float64)
    distinct = np.unique(scores)
    gap = np.diff(distinct).min() if len(distinct) > 1 else 1.0
    return (scores + 0.49 * gap * popularity / popularity.max()).astype(np.float64)


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


def baselines(data: Data, which: tuple[str, ...] = ("popularity", "ease", "ials")) -> dict[str, dict]:
    """Each baseline's metrics under both protocols, with the setting chosen on validation."""
    train = data.matrix(data.train)
    pop = popularity_scores(train)
    fit, val = validation_cut(data)
    fit_m = data.matrix(fit)
    out = {}
    if "popularity" in which:
        out["popularity"] = {"setting": "training counts", **evaluate_scores(lambda u: np.tile(pop, (len(u), 1)), data)}
    if "ease" in which:
        best = _choose(EASE_LAMBDAS, lambda lam: _ease_scorer(fit_m, lam, pop), data, fit_m, val)
        out["ease"] = {"setting": {"lambda": best}, **evaluate_scores(_ease_scorer(train, best, pop), data)}
    if "ials" in which:
        best = _choose(IALS_GRID, lambda s: _ials_scorer(fit_m, s, pop), data, fit_m, val)
        out["ials"] = {"setting": best, **evaluate_scores(_ials_scorer(train, best, pop), data)}
    return out


def _choose(grid, make_scorer, data: Data, fit: sp.csr_matrix, val: Split):
    """The grid point with the best validation recall@10, seen (fit) items excluded."""
    scored = []
    for setting in grid:
        start = time.monotonic()
        r = rank_metrics(make_scorer(setting), val, fit, ks=(10,), ndcg_ks=())["recall@10"]
        log.info("validation: %s recall@10 %.4f (%.1f s)", setting, r, time.monotonic() - start)
        scored.append((r, setting))
    return max(scored, key=lambda t: t[0])[1]


def _ease_scorer(train: sp.csr_matrix, lam: float, pop: np.ndarray):
    b = ease(train, lam)

    def score(users):
        rows = train[np.maximum(users, 0)].toarray() @ b
        rows[users < 0] = 0.0
        return with_tiebreak(rows, pop)
    return score


def _ials_scorer(train: sp.csr_matrix, setting: dict, pop: np.ndarray):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=setting["factors"], regularization=setting["regularization"],
                                    alpha=setting.get("alpha", 1.0), iterations=setting.get("iterations", 15),
                                    random_state=42, num_threads=1)
    model.fit(train.tocsr(), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def score(u):
        rows = users[np.maximum(u, 0)] @ items.T
        rows[u < 0] = 0.0
        return with_tiebreak(rows, pop)
    return score


def tower_scorer(query_tower, candidate_tower, data: Data):
    """Scores of a two-tower model: the query tower over the user vocabulary (and one unknown user; each
    user at their latest training timestamp), the candidate tower over the candidates."""
    from scaleout.model import embed_users, tf

    users = embed_users(query_tower, np.append(data.user_ids, ""))
    items = candidate_tower(tf.constant(data.item_ids.astype(object)), training=False).numpy()

    def score(u):
        return users[np.where(u >= 0, u, len(data.user_ids))] @ items.T
    return score


def model_scorer(towers, data: Data):
    return tower_scorer(towers.query, towers.candidate, data)


def quality_report(run, which: tuple[str, ...] = ("popularity", "ease", "ials")) -> dict:
    """The model of RUN and the baselines under both protocols; writes RUN/metrics/quality.json."""
    from scaleout.fsutil import write_json
    from scaleout.train import Towers

    start = time.monotonic()
    data = load(Dataset(run.data))
    report = {"test_interactions": int(len(data.test.users)), "candidates": int(len(data.item_ids)),
              "ks": list(KS), "ndcg_ks": list(NDCG_KS), "protocols": list(PROTOCOLS),
              "model": evaluate_scores(model_scorer(Towers.load(run.model), data), data)}
    report["baselines"] = baselines(data, which)
    report["seconds"] = round(time.monotonic() - start, 1)
    write_json(run.quality_metrics, report)
    return report


def headline(report: dict) -> dict:
    """recall@10 and @100 of the model and each baseline, under both protocols."""
    methods = {"model": report["model"], **report["baselines"]}
    return {name: {p: {k: round(m[p][k], 4) for k in ("recall@10", "recall@100")} for p in PROTOCOLS}
            for name, m in methods.items()}


def quality_sentence(report: dict) -> str:
    """One line: the model's recall@10/@100 with seen items excluded and its top-100, beside the best baseline."""
    m = report["model"]
    text = (f"model: recall@10 {m['exclude_seen']['recall@10']:.4f}, @100 {m['exclude_seen']['recall@100']:.4f} "
            f"seen excluded; top-100 {m['tutorial']['recall@100']:.4f} tutorial protocol")
    if report["baselines"]:
        name, b = max(report["baselines"].items(), key=lambda kv: kv[1]["exclude_seen"]["recall@10"])
        text += f"; best baseline {name}: {b['exclude_seen']['recall@10']:.4f}, {b['exclude_seen']['recall@100']:.4f}"
    return text


def format_report(report: dict) -> str:
    """A plain table: one row per method and protocol."""
    cols = [f"recall@{k}" for k in report["ks"]] + [f"ndcg@{k}" for k in report["ndcg_ks"]]
    methods = {"model": report["model"], **report["baselines"]}
    width = max(12, *(len(name) for name in methods))
    lines = [f"{'method':<{width}} {'protocol':<13} " + " ".join(f"{c:>10}" for c in cols)]
    for name, m in methods.items():
        for protocol in PROTOCOLS:
            lines.append(f"{name:<{width}} {protocol:<13} " + " ".join(f"{m[protocol][c]:>10.4f}" for c in cols))
    return "\n".join(lines)
