"""A model trained with a popularity prior (--popularity-prior): its embeddings, indexes and exports serve
q . c + beta x log(1 + the candidate's training count) from the towers' own embeddings, in a fresh process."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from runs import USERS, fresh_query, in_process_answers, top10, trained_and_indexed

BETA = 0.5


@pytest.fixture(scope="module")
def prior_run(pipeline_run, tmp_path_factory):
    """The main job's prepared data, trained 2 epochs with the prior, embedded, indexed (ScaNN forced into a
    tree) and exported."""
    return trained_and_indexed(pipeline_run, tmp_path_factory.mktemp("prior") / "run",
                               ("--popularity-prior", BETA, "--epochs", 2))


@pytest.mark.slow
def test_the_exports_serve_the_prior_with_the_towers_scores(prior_run):
    from scaleout.embed.embedding_set import EmbeddingSet
    from scaleout.rundir import RunDir
    from scaleout.train.saved import Towers
    from scaleout.train.towers import embed_users

    run = RunDir(prior_run)
    towers = Towers.load(run.model, None)
    assert towers.model_cfg.popularity_prior == BETA
    ids, vectors, _ = EmbeddingSet(run.embeddings).load()
    assert vectors.shape == (1682, 129)  # the preset's 128 dimensions and the prior's column
    table = pq.read_table(prior_run / "data" / "candidates.parquet", columns=["movie_id", "train_count"])
    count = dict(zip(table.column("movie_id").to_pylist(), table.column("train_count").to_pylist()))
    log_count = np.log1p([count[i] for i in ids])
    np.testing.assert_allclose(vectors[:, -1], log_count, rtol=1e-6)
    queries = embed_users(towers.query, USERS)
    np.testing.assert_allclose(queries[:, -1], BETA)
    # The served order: the towers' 128 dimensions scored, plus beta x log(1 + count), computed here apart.
    towers_own = queries[:, :-1] @ vectors[:, :-1].T
    want = top10(ids, towers_own + BETA * log_count[None, :])
    served = fresh_query(prior_run / "export" / "brute_force", USERS)["ids"]
    assert served == want
    without = top10(ids, towers_own)
    assert sum(a != b for a, b in zip(without, want)) > len(USERS) // 2  # the prior changes most users' lists
    # ScaNN on the 33 dimensions: its SavedModel answers as the index does in process.
    _, answers = in_process_answers(prior_run, USERS)
    assert fresh_query(prior_run / "export" / "scann", USERS)["ids"] == answers
    assert json.loads((prior_run / "export" / "scann" / "export.json").read_text())["embedding_dim"] == 129
