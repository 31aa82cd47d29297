"""The rows a user outside the training vocabulary is answered from, set when a model is saved.

Every user outside the vocabulary looks up the user id embedding's row 0
(StringLookup's out-of-vocabulary row), whose side-feature codes are missing
and whose stored history is empty. No training example gathers those rows, so
they keep their random initial values unless set here (``settle_unknown_user``,
called by ``scaleout.train.saved.save_model``): to what the average training
interaction's user would get.
"""

from __future__ import annotations

import numpy as np

from scaleout.errors import ArtifactError
from scaleout.tfenv import tf
from scaleout.train.towers import IALS_USER_FACTORS, CodeTable, ItemEmbedding, PooledEmbedding

UNKNOWN_USER = ("the query of the average training interaction's user: the user id embedding's row for users outside "
                "the vocabulary holds the mean of the users' id rows and side-feature embeddings, each user weighted "
                "by their training interactions")
UNKNOWN_USER_DEEP = ("the mean of the user id embedding's rows, each weighted by the user's training interactions (the "
                     "towers' ReLU layers keep the users' side features out of it: an unknown user's are missing)")
UNKNOWN_HISTORY = ("a query with no history items (an unknown user who gives none) pools the history table's row 0: "
                   "the mean of the users' pooled histories, each user weighted by their training interactions")
UNKNOWN_IALS = ("iALS's user factors for users outside the vocabulary are the users' mean factors, each user "
                "weighted by their training interactions (set when they were fitted)")
SETTLE_VALUES = 1 << 27  # values read at a time (512 MiB of float32; 2^20 rows of 128 dimensions)


def _weighted_sum(table: tf.Variable, counts: np.ndarray, row_sum) -> np.ndarray:
    """The sum over the vocabulary's rows 1.. of ``table`` of what ``row_sum`` makes of (rows read, their
    ``counts``), reading ``SETTLE_VALUES`` values at a time."""
    rows, width = table.shape
    if rows != len(counts) + 1:
        raise ArtifactError(f"the query tower's {table.name.split(':')[0]} has {rows:,} rows; expected one per user "
                            f"of the vocabulary ({len(counts):,}) and one for users outside it")
    step, total = max(1, SETTLE_VALUES // max(width, 1)), 0.0
    for lo in range(1, rows, step):
        hi = min(lo + step, rows)
        total = total + row_sum(table[lo:hi].numpy(), counts[lo - 1:hi - 1])
    return total


def _code_weights(codes: CodeTable, counts: np.ndarray, size: int) -> np.ndarray:
    """``[size]``: each code's weight in the interaction-weighted mean of the rows' pooled codes (a row's present
    codes, > 0, averaged, as ``PooledEmbedding`` and ``ItemEmbedding`` pool them); weights sum to 1 over codes."""
    def row_sum(block, weights):
        present = block > 0
        per_code = np.repeat(weights / np.maximum(present.sum(axis=1), 1), present.sum(axis=1))
        return np.bincount(block[present], weights=per_code, minlength=size)

    return _weighted_sum(codes.table, counts, row_sum) / counts.sum()


def _mix(weights: np.ndarray, table: tf.Variable) -> np.ndarray:
    """``weights @ table`` in float64, reading ``SETTLE_VALUES`` values of ``table`` at a time and only the
    blocks with a weight (a history table can be the whole catalogue: a million rows is 512 MiB at 128
    dimensions, twice that in float64)."""
    rows, width = table.shape
    step, total = max(1, SETTLE_VALUES // max(width, 1)), np.zeros(width, np.float64)
    for lo in range(0, rows, step):
        part = weights[lo:lo + step]
        if part.any():
            total += part @ table[lo:lo + len(part)].numpy().astype(np.float64)
    return total


def settle_unknown_user(query: tf.keras.Model, counts: np.ndarray) -> str:
    """Gives a user outside the vocabulary the query of the average training interaction's user: the mean over
    the vocabulary, each user weighted by ``counts`` (their training interactions, in vocabulary order), of the
    parts of a user's query that such a user lacks. Every user outside the vocabulary looks up the user id
    embedding's row 0 (StringLookup's out-of-vocabulary row), whose side-feature codes are missing (their parts
    zero) and whose stored history is empty; no training example gathers that row, so it kept its random initial
    values, and a user unknown at serving or in a temporal split's test got a list no better than chance.

    - The id row 0 is set to the mean of the users' id rows plus their side features' parts (less row 0's own).
      Above ReLU layers the parts do not add, and the row holds the id rows' mean alone.
    - A history's embedding table's row 0, which pools a query with no history items at evaluation and serving
      (``ItemEmbedding``), is set to the mean of the users' pooled stored histories. A new user who gives items
      is served from them (and the id row, if any).
    The timestamp is the request's. Returns what the rows hold (``UNKNOWN_USER`` or ``UNKNOWN_USER_DEEP``, then
    ``UNKNOWN_HISTORY``, joined by "; "). A tower with neither an id embedding nor a history (which ModelConfig
    refuses) raises ``ArtifactError``."""
    counts = np.asarray(counts, np.float64)
    if counts.sum() <= 0:
        raise ArtifactError("the user vocabulary counts no training interactions; expected a count per user")
    names = {layer.name: layer for layer in query.layers}
    deep = "query_output" in names
    held = []
    if "user_embedding" in names:
        table = names["user_embedding"].embeddings
        row = _weighted_sum(table, counts, lambda block, weights: weights @ block.astype(np.float64)) / counts.sum()
        for layer in query.layers:
            if not deep and isinstance(layer, PooledEmbedding) and layer.name.endswith("_embedding"):
                codes = names[layer.name[:-len("_embedding")] + "_codes"]
                row += _mix(_code_weights(codes, counts, layer.size + 1), layer.embeddings)
                row -= layer(codes.table[:1]).numpy()[0]
        table.scatter_update(tf.IndexedSlices(tf.constant(row[None], table.dtype), tf.constant([0])))
        held.append(UNKNOWN_USER_DEEP if deep else UNKNOWN_USER)
    if "history_codes" in names:
        pool = next(layer for layer in query.layers if isinstance(layer, ItemEmbedding))
        mean = _mix(_code_weights(names["history_codes"], counts, pool.rows), pool.embeddings)
        pool.embeddings.scatter_update(tf.IndexedSlices(tf.constant(mean[None], pool.embeddings.dtype),
                                                        tf.constant([0])))
        held.append(UNKNOWN_HISTORY)
    if not held:
        raise ArtifactError("the query tower has neither a user id embedding nor a history; expected at least one "
                            f"(its layers: {', '.join(sorted(names))})")
    return "; ".join(held + ([UNKNOWN_IALS] if IALS_USER_FACTORS in names else []))
