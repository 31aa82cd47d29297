"""Side features: coded from a prepared dataset, left out with a note when missing, saved with the towers."""

import json
import subprocess
import sys

import numpy as np
import pytest

from scaleout.config import FEATURES, DataConfig, ModelConfig
from scaleout.train.features import ZIP_PREFIX, build_tables


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from scaleout.data.prepare import prepare

    return prepare(DataConfig(source="synthetic", synthetic_users=200, synthetic_items=50,
                              synthetic_interactions=2000), tmp_path_factory.mktemp("syn") / "data")


def test_movielens_has_every_feature_coded_per_vocabulary_row(ml100k_dataset):
    tables = build_tables(ml100k_dataset, FEATURES)
    assert tables.used == list(FEATURES) and tables.left_out == {}
    users = ml100k_dataset.users.to_pylist()
    assert [u["user_id"] for u in users] == ml100k_dataset.vocabulary("user_id").tolist()
    zip_ = {f.name: f for f in tables.query}["zip"]
    assert zip_.codes.shape == (len(users) + 1, 1) and zip_.codes[0, 0] == 0  # row 0: unknown user
    prefix = users[0]["user_zip_code"][:ZIP_PREFIX]
    same_prefix = [i for i, u in enumerate(users) if u["user_zip_code"][:ZIP_PREFIX] == prefix]
    assert len({int(zip_.codes[i + 1, 0]) for i in same_prefix}) == 1
    genres = {f.name: f for f in tables.candidate}["genres"]
    candidates = ml100k_dataset.candidates.to_pylist()
    toy_story = [c["movie_title"] for c in candidates].index("Toy Story (1995)")
    assert np.count_nonzero(genres.codes[toy_story + 1]) == len(candidates[toy_story]["movie_genres"]) == 3
    # The user's latest training timestamp stands in where none is given; row 0 holds the latest overall.
    assert tables.timestamp.user_last[1] == users[0]["last_timestamp"]
    assert tables.timestamp.user_last[0] == max(u["last_timestamp"] for u in users)


def test_features_the_dataset_lacks_are_left_out_with_the_reason(synthetic, caplog):
    tables = build_tables(synthetic, FEATURES)
    assert set(tables.left_out) == {"age", "gender", "occupation", "zip", "genres"}
    assert "'bucketized_user_age'" in tables.left_out["age"] and "movie_genres" in tables.left_out["genres"]
    assert "timestamp" in tables.used and "title" in tables.used  # "item" is a word of every title
    assert "feature 'age' left out" in caplog.text


TOWERS_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
import scaleout
from scaleout.train.saved import Towers
from scaleout.tfenv import tf
from scaleout.train.towers import embed_users
towers = Towers.load(sys.argv[1], None)
users = json.loads(sys.argv[2])
print(json.dumps({"query": embed_users(towers.query, users).tolist(),
                  "candidate": towers.candidate(tf.constant(json.loads(sys.argv[3]))).numpy().tolist()}))
"""


@pytest.mark.parametrize("deep, cosine", [((), False), ((16,), False), ((16,), True)], ids=["summed", "deep", "cosine"])
def test_towers_with_every_feature_save_and_reload_in_a_fresh_process(ml100k_dataset, tmp_path, deep, cosine):
    from scaleout.config import TrainConfig
    from scaleout.train.model import build_for_dataset
    from scaleout.train.towers import embed_users, query_inputs
    from scaleout.train.saved import save_model

    cfg = ModelConfig(embedding_dim=8, features=FEATURES, deep_layers=deep, logq_correction=True, cosine=cosine)
    model = build_for_dataset(cfg, ml100k_dataset)
    users = ["42", "1", "no-such-user"]
    items = ["1", "50", "no-such-movie"]
    query = embed_users(model.query_tower, users)
    assert query.shape == (3, 8) and np.isfinite(query).all()
    norms = np.linalg.norm(query, axis=1)
    assert np.allclose(norms, 1.0, rtol=1e-5) if cosine else not np.allclose(norms, 1.0, rtol=1e-3)
    last = ml100k_dataset.users.to_pandas().set_index("user_id").loc["42", "last_timestamp"]
    at_last = model.query_tower(query_inputs(["42"], [last])).numpy()
    np.testing.assert_allclose(at_last[0], query[0], rtol=1e-5)
    earlier = model.query_tower(query_inputs(["42"], [last - 200 * 86400])).numpy()
    assert not np.allclose(earlier[0], query[0])  # the timestamp is a feature
    save_model(model, tmp_path / "model", cfg, TrainConfig(), ml100k_dataset)
    assert json.loads((tmp_path / "model" / "model.json").read_text())["features"]["used"] == list(FEATURES)
    fresh = subprocess.run([sys.executable, "-c", TOWERS_IN_A_FRESH_PROCESS, str(tmp_path / "model"),
                            json.dumps(users), json.dumps(items)], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    out = json.loads(fresh.stdout.strip().splitlines()[-1])
    # Saving set the unknown user's id row (settle_unknown_user) in the model too: the known users' queries are
    # as before, and the reloaded towers answer as the model now does.
    saved = embed_users(model.query_tower, users)
    np.testing.assert_array_equal(saved[:2], query[:2])
    np.testing.assert_allclose(out["query"], saved, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["candidate"], model.candidate_tower(np.array(items, dtype=object)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_a_model_with_features_trains_and_its_loss_falls(synthetic):
    from scaleout.config import TrainConfig
    from scaleout.train.local import fit

    model, history = fit(synthetic, ModelConfig(embedding_dim=8, features=FEATURES, remove_accidental_hits=True,
                                                logq_correction=True, l2=0.01),
                         TrainConfig(batch_size=256, epochs=3))
    assert model.features["used"] == ["timestamp", "title"]
    assert history[-1]["loss_per_example"] < history[0]["loss_per_example"]
