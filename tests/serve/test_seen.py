"""Seen-item exclusion at serving: `scaleout recommend --exclude-seen` and SavedModels exported with it."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from scaleout.serve.seen import SeenItems

SERVE = """
import sys, json
import scann  # registers ScaNN's ops (the scann export needs them)
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
out = serve(user_id=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"ids": out["movie_id"].numpy().astype(str).tolist(), "scores": out["scores"].numpy().tolist()}))
"""


def seen_by_hand(data_dir):
    seen = {}
    for path in sorted((data_dir / "train").glob("*.parquet")):
        for row in pq.read_table(path, columns=["user_id", "movie_id"]).to_pylist():
            seen.setdefault(row["user_id"], set()).add(row["movie_id"])
    return seen


def test_seen_items_are_each_users_training_items_mapped_to_index_rows(ml100k_dataset):
    seen = SeenItems.from_dataset(ml100k_dataset)
    by_hand = seen_by_hand(ml100k_dataset.path)
    for user in ("42", "1", "405"):
        assert set(seen.of(user)) == by_hand[user]
    assert len(seen.of("no-such-user")) == 0
    assert seen.max_count == max(len(v) for v in by_hand.values())
    ids = np.array(sorted(ml100k_dataset.vocabulary("movie_id"))[::-1][:-10])  # another order, 10 ids missing
    indptr, rows = seen.rows_in(ids)
    user = seen._row["42"]
    mine = rows[indptr[user]:indptr[user + 1]]
    assert list(mine) == sorted(mine)
    assert set(ids[mine]) == by_hand["42"] & set(ids)


@pytest.fixture(scope="module")
def exports(pipeline_run, tmp_path_factory):
    root = pipeline_run[0]
    out = tmp_path_factory.mktemp("exports")
    result = run_cli("export", "--run", root, "--kind", "brute_force", "scann", "--exclude-seen", "-k", 10,
                     "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, out


@pytest.mark.parametrize("kind", ["brute_force", "scann"])
def test_an_export_with_exclude_seen_serves_only_unseen_items_in_a_fresh_process(exports, kind):
    from scaleout.serve.catalogue import Catalogue
    from scaleout.rundir import RunDir

    root, out = exports
    users = ["42", "1", "405", "no-such-user"]
    fresh = subprocess.run([sys.executable, "-c", SERVE, str(out / kind), json.dumps(users)],
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    served = json.loads(fresh.stdout.strip().splitlines()[-1])
    by_hand = seen_by_hand(root / "data")
    catalogue = Catalogue(RunDir(root))
    for user, ids, scores in zip(users, served["ids"], served["scores"]):
        assert len(ids) == 10 and not set(ids) & by_hand.get(user, set())
        assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
        expected = catalogue.recommend(user, 10, kind, exclude_seen=True)
        assert ids == list(expected.movie_ids), user
    info = json.loads((out / kind / "export.json").read_text())
    assert info["exclude_seen"] and info["seen_items"]["retrieved"] == 10 + info["seen_items"]["max_seen"]


def test_recommend_exclude_seen_drops_training_items_and_keeps_the_order_of_the_rest(pipeline_run):
    from scaleout.serve.catalogue import Catalogue
    from scaleout.rundir import RunDir

    root = pipeline_run[0]
    catalogue = Catalogue(RunDir(root))
    seen = seen_by_hand(root / "data")["42"]
    everything = catalogue.recommend("42", 1682, "brute_force")
    unseen = [m for m in everything.movie_ids if m not in seen][:5]
    assert list(catalogue.recommend("42", 5, "brute_force", exclude_seen=True).movie_ids) == unseen
    cli = run_cli("recommend", "--run", root, "--user", "42", "-k", 5, "--exclude-seen")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert [line.rsplit("movie_id ", 1)[1].split(",")[0] for line in cli.stdout.splitlines()[1:]] == unseen
