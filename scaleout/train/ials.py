"""implicit's ALS (iALS) on a binary user x item matrix: the quality report's baseline
(scaleout.evaluate.baselines) and the factors a model can serve beside its towers'
(``ModelConfig.ials_weight``, scaleout.train.towers)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def ials_fit(train: sp.csr_matrix, setting: dict):
    """implicit's ALS fitted on ``train`` [users, items] with ``setting`` ({"factors", "regularization", and
    optionally "alpha" (default 1) and "iterations" (default 15)}); seeded, so the same matrix gives the same
    factors."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit's advice (it warns otherwise, and runs up to 10x slower): BLAS on one thread while it fits; its own
    # loop over users and items on every core (num_threads 0), which gives the same factors to the bit as one thread
    # (each row's solve is its own): a cluster's head has 16 cores
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=setting["factors"], regularization=setting["regularization"],
                                        alpha=setting.get("alpha", 1.0), iterations=setting.get("iterations", 15),
                                        random_state=42, num_threads=0)
        model.fit(train.tocsr(), show_progress=False)
    return model


def factor_tables(user_rows: np.ndarray, item_rows: np.ndarray, users: int, items: int,
                  setting: dict) -> tuple[np.ndarray, np.ndarray]:
    """iALS fitted on the interactions (``user_rows``, ``item_rows``: rows 0..users-1 and 0..items-1, repeats
    counted once): ([users + 1, factors], [items + 1, factors]) float32, by the towers' StringLookup rows (row
    0 first). The user table's row 0, a user outside the vocabulary's, is the user factors' mean over the
    interactions (as ``scaleout.train.unknown_user`` gives such a user the average interaction's embedding); the
    item table's, an id outside the candidates', zeros."""
    matrix = sp.csr_matrix((np.ones(len(user_rows), np.float32), (user_rows, item_rows)), shape=(users, items))
    matrix.data[:] = 1.0
    model = ials_fit(matrix, setting)
    user_factors = np.asarray(model.user_factors, np.float32)
    item_factors = np.asarray(model.item_factors, np.float32)
    per_user = np.asarray(matrix.sum(axis=1), np.float64).ravel()
    mean = (per_user @ user_factors) / max(per_user.sum(), 1.0)
    return (np.vstack([mean[None].astype(np.float32), user_factors]),
            np.vstack([np.zeros((1, item_factors.shape[1]), np.float32), item_factors]))
