import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaleout.config import DataConfig
from scaleout.data.synthetic import _SORTED_SEARCH_FROM, Synthetic, _draw, _power_law_cdf
from scaleout.errors import DataError


@pytest.mark.parametrize("repeated_pairs", ["all", "first"])
def test_chunks_are_bounded_deterministic_and_power_law(repeated_pairs):
    cfg = DataConfig(source="synthetic", synthetic_users=2000, synthetic_items=1000, synthetic_interactions=50_000,
                     repeated_pairs=repeated_pairs)
    batches = list(Synthetic(cfg).interactions(8_000))
    if repeated_pairs == "all":  # every draw kept: full chunks
        assert [b.num_rows for b in batches] == [8_000] * 6 + [2_000]
    else:  # the repeated draws dropped and drawn again
        assert sum(b.num_rows for b in batches) == 50_000 and max(b.num_rows for b in batches) <= 8_000
        assert len(batches) > 7
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


def pairs_of(batches):
    table = pa.Table.from_batches(batches)
    return list(zip(table.column("user_id").to_pylist(), table.column("movie_id").to_pylist()))


def test_pairs_are_distinct_by_default_and_every_draw_is_kept_with_repeated_pairs_all():
    shape = dict(source="synthetic", synthetic_users=600, synthetic_items=400, synthetic_interactions=30_000)
    everything = pairs_of(Synthetic(DataConfig(**shape, repeated_pairs="all")).interactions(7_000))
    assert len(set(everything)) < 0.8 * len(everything)  # independent draws repeat pairs often
    distinct = pairs_of(Synthetic(DataConfig(**shape)).interactions(7_000))
    assert len(distinct) == len(set(distinct)) == 30_000
    # the first chunk's new pairs are the draws of the source with every draw kept, in order
    first = list(dict.fromkeys(everything[:7_000]))
    assert distinct[:len(first)] == first
    timestamps = pa.Table.from_batches(list(Synthetic(DataConfig(**shape)).interactions(7_000))).column("timestamp")
    assert np.all(np.diff(timestamps.to_numpy()) == 1)
    assert Synthetic(DataConfig(**shape)).describe()["repeated_pairs"] == "first"


def test_a_catalogue_too_small_for_that_many_distinct_pairs_is_refused():
    with pytest.raises(DataError, match="200,000 distinct \\(user, item\\) pairs asked for, but 10,000 users x 1 "
                                        "items have only 10,000; expected fewer interactions"):
        Synthetic(DataConfig(source="synthetic", synthetic_items=1))
    # Within users x items, but so skewed that the last pairs are almost never drawn: refused, not an endless loop.
    skewed = DataConfig(source="synthetic", synthetic_users=4, synthetic_items=2_000, synthetic_interactions=7_000,
                        synthetic_zipf=3.0)
    with pytest.raises(DataError, match="synthetic: [0-9,]+ distinct \\(user, item\\) pairs of the 7,000 asked for, "
                                        "and only [0-9]+ of [0-9,]+ more draws were new"):
        list(Synthetic(skewed).interactions(5_000))


def test_a_prepared_synthetic_dataset_has_no_pair_in_both_splits(tmp_path):
    from scaleout.data.prepare import prepare

    ds = prepare(DataConfig(source="synthetic", synthetic_users=300, synthetic_items=200,
                            synthetic_interactions=12_000, chunk_rows=5_000), tmp_path / "data")
    pairs = {split: [(r["user_id"], r["movie_id"]) for p in ds.files(split) for r in pq.read_table(p).to_pylist()]
             for split in ("train", "test")}
    assert len(pairs["train"]) + len(pairs["test"]) == ds.counts["interactions"] == 12_000
    assert not set(pairs["train"]) & set(pairs["test"])
