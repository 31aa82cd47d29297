"""Synthetic interactions at any size, generated in chunks from a seed.

Item popularity follows a power law (Zipf exponent ``synthetic_zipf``), as
real catalogues do, and user activity a milder one. So that a retrieval model
has something to learn, users fall into taste groups: half of a user's
interactions follow the global popularity order, half their group's own order
(group g reads rank r as item ``perm[(r + g * I / G) % I]``).
Every chunk is drawn from ``default_rng([seed, chunk])``, so the data is the
same for the same settings, and only one chunk is in memory at a time.

Each (user, item) pair appears once, as in MovieLens (``repeated_pairs``
"first", the default): a draw of a pair already kept is dropped and drawing
goes on until ``synthetic_interactions`` distinct pairs are kept. Independent
draws repeat pairs often (41% of 1M draws at MovieLens 1M's shape), and under
a random split a repeated pair lands in train and test both: its test row is
then a training example ranked again, not a prediction. The pairs kept are
remembered as one int64 key each (8 bytes a pair: 800 MB at 100M). A
catalogue too small for that many distinct pairs at its skew is refused.
``repeated_pairs="all"`` keeps every draw (the source before 2026-12-05).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaleout.config import DataConfig
from scaleout.data.pairs import PairSet
from scaleout.data.schema import conform, interaction_schema
from scaleout.errors import DataError

GROUPS = 16
GROUP_SHARE = 0.5
_SORTED_SEARCH_FROM = 1 << 18  # entries of a popularity table from which draws are searched sorted
_START = 1_500_000_000  # a fixed epoch second, so timestamps look like real ones
_STALLED = 1e-3  # distinct pairs: two chunks in a row keeping fewer than this share of new pairs are refused


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The index each uniform draw ``u`` falls at in ``cdf``. A table larger than the caches (10M users) is
    searched with the draws sorted, then put back in their order: the same answer, the table walked in order
    (at 10M entries 1.4 s per million draws, 0.2 s sorted; at 1M, 0.29 and 0.16); a small one (up to 2^18
    entries: 0.11 s at 26,744, where sorting costs more) is searched directly."""
    if len(cdf) <= _SORTED_SEARCH_FROM:
        return np.searchsorted(cdf, u, side="right").clip(max=len(cdf) - 1)
    order = np.argsort(u)
    out = np.empty(len(u), dtype=np.int64)
    out[order] = np.searchsorted(cdf, u[order], side="right")
    return out.clip(max=len(cdf) - 1)


def _power_law_cdf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


class Synthetic:
    name = "synthetic"
    columns = ("user_id", "movie_id", "movie_title", "timestamp")
    items_by_construction = True  # every movie_id is one of items()'s (see prepare.open_source)

    def __init__(self, cfg: DataConfig):
        self.users = cfg.synthetic_users
        self.items_n = cfg.synthetic_items
        self.interactions_n = cfg.synthetic_interactions
        self.zipf = cfg.synthetic_zipf
        self.seed = cfg.seed
        self.distinct = cfg.repeated_pairs == "first"
        if self.distinct and self.interactions_n > self.users * self.items_n:
            raise DataError(f"synthetic: {self.interactions_n:,} distinct (user, item) pairs asked for, but "
                            f"{self.users:,} users x {self.items_n:,} items have only {self.users * self.items_n:,}; "
                            "expected fewer interactions, more users or items, or --repeated-pairs all")

    def describe(self) -> dict:
        return {"source": self.name, "users": self.users, "items": self.items_n,
                "interactions": self.interactions_n, "zipf": self.zipf, "seed": self.seed, "groups": GROUPS,
                "repeated_pairs": "first" if self.distinct else "all"}

    def items(self) -> pa.Table:
        ids = pc.cast(pa.array(np.arange(self.items_n, dtype=np.int64)), pa.string())
        return pa.table({"movie_id": ids, "movie_title": pc.binary_join_element_wise("item ", ids, "")})

    def interactions(self, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        schema = interaction_schema(self.columns)
        item_cdf = _power_law_cdf(self.items_n, self.zipf)
        user_cdf = _power_law_cdf(self.users, 0.5)
        # Which item each popularity rank is, and which user each activity rank is.
        setup = np.random.default_rng([self.seed, 2**31])
        item_of_rank = setup.permutation(self.items_n)
        user_of_rank = setup.permutation(self.users)
        shift = max(1, self.items_n // GROUPS)
        kept = PairSet() if self.distinct else None
        done, chunk, rate = 0, 0, 1.0
        while done < self.interactions_n:
            wanted = self.interactions_n - done
            # distinct pairs: enough draws for what is missing at the last chunk's rate of new pairs
            n = min(chunk_rows, wanted if kept is None else int(np.ceil(wanted / max(rate, _STALLED))))
            rng = np.random.default_rng([self.seed, chunk])
            chunk += 1
            users = user_of_rank[_draw(user_cdf, rng.random(n))]
            ranks = _draw(item_cdf, rng.random(n))
            in_group = rng.random(n) < GROUP_SHARE
            items = item_of_rank[(ranks + in_group * (users % GROUPS) * shift) % self.items_n]
            if kept is not None:
                new = kept.first_new(users.astype(np.int64) * self.items_n + items, wanted)
                rate, before = len(new) / n, rate
                if rate < _STALLED and before < _STALLED:  # twice, the second time drawing the most it may
                    raise DataError(
                        f"synthetic: {done + len(new):,} distinct (user, item) pairs of the "
                        f"{self.interactions_n:,} asked for, and only {len(new):,} of {n:,} more draws were new: "
                        f"{self.users:,} users x {self.items_n:,} items at Zipf {self.zipf} hold too few likely "
                        "pairs; expected fewer interactions, more users or items, or --repeated-pairs all")
                users, items = users[new], items[new]
            n = len(users)
            user_ids = pc.cast(pa.array(users), pa.string())
            item_ids = pc.cast(pa.array(items), pa.string())
            timestamps = _START + done + np.arange(n, dtype=np.int64)
            batch = pa.RecordBatch.from_pydict({
                "user_id": user_ids,
                "movie_id": item_ids,
                "movie_title": pc.binary_join_element_wise("item ", item_ids, ""),
                "timestamp": pa.array(timestamps),
            })
            done += n
            if n:
                yield conform(batch, schema, "synthetic")
