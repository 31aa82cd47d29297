"""benchmarks/prior_scann.py: the prior's column as the towers serve it, the beta of a share, and its measure."""

import numpy as np
import pytest
from benchscripts import load


@pytest.fixture(scope="module")
def prior_scann():
    return load("prior_scann")


def test_the_prior_column_scores_as_the_towers_serve_it(prior_scann):
    rng = np.random.default_rng(1)
    candidates, queries = rng.standard_normal((50, 4), np.float32), rng.standard_normal((3, 4), np.float32)
    counts = prior_scann.training_counts(50, 1.5)
    assert counts.min() >= 0 and (counts == 0).any() and counts.dtype.kind == "i"
    c, q = prior_scann.with_prior(candidates, queries, counts, 0.3)
    assert c.shape == (50, 5) and q.shape == (3, 5)
    np.testing.assert_allclose(q @ c.T, queries @ candidates.T + 0.3 * np.log1p(counts)[None, :], rtol=1e-5, atol=1e-5)


def test_beta_gives_the_prior_the_share_of_the_scores_spread(prior_scann):
    rng = np.random.default_rng(2)
    candidates, queries = rng.standard_normal((400, 8), np.float32), rng.standard_normal((20, 8), np.float32)
    counts = prior_scann.training_counts(400, 1.5)
    beta = prior_scann.beta_for_share(candidates, queries, counts, 0.25)
    assert beta * np.std(np.log1p(counts)) == pytest.approx(0.25 * np.std(queries @ candidates.T), rel=1e-5)


def test_measure_is_exact_where_scann_scores_every_candidate_and_shows_what_the_prior_changes(prior_scann):
    got = prior_scann.measure(3_000, 8, (0.0, 0.1, 0.5), 1.5)  # under brute_force_below: ScaNN scores exactly
    rows = {r["share"]: r for r in got["rows"]}
    assert all(r["mode"] == "brute_force" and r["recall@10"] == 1.0 and r["recall@100"] == 1.0 for r in got["rows"])
    assert rows[0.0]["dim"] == 8 and rows[0.0]["beta"] == 0.0 and rows[0.1]["dim"] == rows[0.5]["dim"] == 9
    changed = [rows[s]["exact_top10_changed_by_prior"] for s in (0.0, 0.1, 0.5)]
    assert changed[0] == 0.0 and 0.0 < changed[1] < changed[2], changed


def test_measure_of_hashed_scores_falls_short_of_exact(prior_scann):
    from scaleout.config import IndexConfig

    # anisotropic hashing with almost nothing rescored: the figure is the index's own, not brute force's
    got = prior_scann.measure(3_000, 8, (0.0, 0.2), 1.5, IndexConfig(mode="ah", reorder=10))
    assert all(r["mode"] == "ah" for r in got["rows"])
    assert all(0.0 < r["recall@100"] < 1.0 for r in got["rows"]), got["rows"]
