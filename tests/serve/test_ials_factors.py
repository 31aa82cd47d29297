"""A model trained with iALS's factors beside the towers' (--ials-weight): its embeddings, indexes and exports
serve q . c + W x u . v, the factors fitted on the run's training split, in a fresh process."""

import json

import numpy as np
import pytest

from runs import USERS, fresh_query, in_process_answers, top10, trained_and_indexed

WEIGHT, FACTORS = 2.0, 16


@pytest.fixture(scope="module")
def ials_run(pipeline_run, tmp_path_factory):
    """The main job's prepared data, trained 2 epochs with iALS's factors, embedded, indexed and exported."""
    return trained_and_indexed(pipeline_run, tmp_path_factory.mktemp("ials") / "run",
                               ("--ials-weight", WEIGHT, "--ials-factors", FACTORS, "--epochs", 2))


@pytest.mark.slow
def test_the_exports_serve_ials_beside_the_towers_scores(ials_run):
    from scaleout.data.dataset import Dataset
    from scaleout.embed.embedding_set import EmbeddingSet
    from scaleout.rundir import RunDir
    from scaleout.train.features import build_tables
    from scaleout.train.saved import Towers
    from scaleout.train.towers import embed_users

    run = RunDir(ials_run)
    towers = Towers.load(run.model, None)
    assert towers.model_cfg.ials_weight == WEIGHT and towers.model_cfg.ials_factors == FACTORS
    ids, vectors, _ = EmbeddingSet(run.embeddings).load()
    assert vectors.shape == (1682, 128 + FACTORS)  # the preset's 128 dimensions and iALS's
    # The factors the towers hold are iALS's on the run's training split, fitted again here apart.
    dataset = Dataset(ials_run / "data")
    tables = build_tables(dataset, (), ials=towers.model_cfg.ials)
    item_row = {m: r + 1 for r, m in enumerate(dataset.vocabulary("movie_id"))}
    user_row = {u: r + 1 for r, u in enumerate(dataset.vocabulary("user_id"))}
    v = tables.ials_items[[item_row[i] for i in ids]]
    np.testing.assert_array_equal(vectors[:, 128:], v)
    queries = embed_users(towers.query, USERS)
    u = tables.ials_users[[user_row[x] for x in USERS]]
    np.testing.assert_allclose(queries[:, 128:], WEIGHT * u, rtol=1e-6)
    # A user outside the vocabulary: the users' mean factors, as model.json says.
    from scaleout.train.unknown_user import UNKNOWN_IALS
    assert towers.info["unknown_user"].endswith(UNKNOWN_IALS)
    np.testing.assert_allclose(embed_users(towers.query, ["nobody"])[0, 128:], WEIGHT * tables.ials_users[0],
                               rtol=1e-6)
    # The served order: the towers' 128 dimensions scored, plus W x u . v, computed here apart.
    towers_own = queries[:, :128] @ vectors[:, :128].T
    want = top10(ids, towers_own + WEIGHT * u @ v.T)
    served = fresh_query(ials_run / "export" / "brute_force", USERS)["ids"]
    assert served == want
    without = top10(ids, towers_own)
    assert sum(a != b for a, b in zip(without, want)) > len(USERS) // 2  # iALS changes most users' lists
    # ScaNN on the 144 dimensions: its SavedModel answers as the index does in process.
    _, answers = in_process_answers(ials_run, USERS)
    assert fresh_query(ials_run / "export" / "scann", USERS)["ids"] == answers
    assert json.loads((ials_run / "export" / "scann" / "export.json").read_text())["embedding_dim"] == 128 + FACTORS
