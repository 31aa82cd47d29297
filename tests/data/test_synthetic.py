import numpy as np
import pyarrow as pa

from scaleout.config import DataConfig
from scaleout.data.synthetic import _SORTED_SEARCH_FROM, Synthetic, _draw, _power_law_cdf


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


def test_draws_from_a_large_table_are_searched_sorted_with_the_plain_search_s_answer():
    rng = np.random.default_rng(3)
    for n in (1_000, _SORTED_SEARCH_FROM + 1):  # searched directly, and sorted then put back in order
        cdf = _power_law_cdf(n, 0.5)
        u = np.concatenate([rng.random(20_000), [0.0, cdf[5], np.nextafter(1.0, 0.0)]])
        got = _draw(cdf, u)
        assert np.array_equal(got, np.searchsorted(cdf, u, side="right").clip(max=n - 1))
        assert got.min() == 0 and got.max() < n


def test_the_source_draws_every_movie_id_from_its_own_items():
    """prepare skips the per-chunk check of movie ids against the items of a source built this way."""
    cfg = DataConfig(source="synthetic", synthetic_users=300, synthetic_items=70, synthetic_interactions=5_000)
    source = Synthetic(cfg)
    ids = set(source.items().column("movie_id").to_pylist())
    assert source.items_by_construction
    assert all(set(b.column("movie_id").to_pylist()) <= ids for b in source.interactions(1_000))
