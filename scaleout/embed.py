"""Candidate embeddings from a trained candidate tower."""

from __future__ import annotations

import numpy as np

from scaleout.model import tf

EMBED_BATCH = 8192


def embed(tower, ids: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """Runs ``tower`` over string ``ids`` ([n]); returns float32 ``[n, dim]``."""
    parts = [tower(tf.constant(np.asarray(ids[i:i + batch_size], dtype=object)), training=False).numpy()
             for i in range(0, len(ids), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)
