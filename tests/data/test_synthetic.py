import numpy as np
import pyarrow as pa

from scaleout.config import DataConfig
from scaleout.data.synthetic import Synthetic


def test_chunks_are_bounded_deterministic_and_power_law():
    cfg = DataConfig(source="synthetic", synthetic_users=2000, synthetic_items=1000, synthetic_interactions=50_000)
    batches = list(Synthetic(cfg).interactions(8_000))
    assert [b.num_rows for b in batches] == [8_000] * 6 + [2_000]
    again = list(Synthetic(cfg).interactions(8_000))
    assert all(a.equals(b) for a, b in zip(batches, again))
    table = pa.Table.from_batches(batches)
    counts = np.sort(np.unique(table.column("movie_id").to_numpy(zero_copy_only=False), return_counts=True)[1])[::-1]
    # Zipf 1.1 over 1000 items, half of it shifted per taste group: the top 1% of items
    # still hold over 15 times their share of interactions.
    assert counts[:10].sum() / counts.sum() > 0.15
    users = table.column("user_id").to_numpy(zero_copy_only=False).astype(int)
    items = table.column("movie_id").to_numpy(zero_copy_only=False).astype(int)
    assert users.max() < 2000 and items.max() < 1000
    other_seed = next(Synthetic(DataConfig(**{**cfg.__dict__, "seed": 7})).interactions(8_000))
    assert not other_seed.equals(batches[0])


def test_candidates_cover_every_item():
    source = Synthetic(DataConfig(source="synthetic", synthetic_items=50))
    items = source.items()
    assert items.num_rows == 50
    assert items.slice(3, 1).to_pylist() == [{"movie_id": "3", "movie_title": "item 3"}]
