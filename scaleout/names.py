"""Names that several stages share: columns, index kinds, baselines, part files.

Each is written here once; the stages import them rather than spell them again.
Column names follow TFDS's MovieLens (see scaleout.data.schema for their types).
"""

from __future__ import annotations

# Columns of the prepared dataset and of the embedding files.
USER_ID = "user_id"
MOVIE_ID = "movie_id"
MOVIE_TITLE = "movie_title"
TIMESTAMP = "timestamp"
TRAIN_COUNT = "train_count"
EMBEDDING = "embedding"

# Index kinds (scaleout.index), which are also the kinds of retrieval export (scaleout.serve).
BRUTE_FORCE = "brute_force"
SCANN = "scann"
INDEX_KINDS = (BRUTE_FORCE, SCANN)

# Baselines of the honest evaluation (scaleout.evaluate).
BASELINES = ("popularity", "ease", "ials")


def part_name(number: int, suffix: str = "parquet") -> str:
    """``part-00003.parquet``: the name of a dataset shard or an embedding part (``suffix`` json: its sidecar)."""
    return f"part-{number:05d}.{suffix}"
