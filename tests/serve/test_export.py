"""Retrieval SavedModels of the main job's run, reloaded in fresh processes, with and without ScaNN installed."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from runs import NO_SCANN, USERS, fresh_query, in_process_answers, top3
from scaleout.config import IndexConfig


def test_the_scann_saved_model_answers_in_a_fresh_process_as_the_index_does(pipeline_run):
    root, summary, _ = pipeline_run
    served = fresh_query(root / "export" / "scann", ["42"] + USERS)
    assert served["signature_k"] == 10
    assert served["titles"][:3] == summary["recommendations"]["scann"]
    _, answers = in_process_answers(root, ["42"] + USERS)
    assert served["ids"] == answers


def test_a_user_outside_training_is_served_as_the_average_training_interactions_user(pipeline_run):
    # No training example gathers the user table's row for unknown ids, so it kept its random initial values and
    # an unknown user got a list no better than chance; the saved model holds the interaction-weighted mean of
    # the users' rows there, and the export serves it.
    from scaleout.data.dataset import Dataset
    from scaleout.train.saved import Towers
    from scaleout.train.towers import embed_users
    from scaleout.train.unknown_user import UNKNOWN_USER

    root = pipeline_run[0]
    dataset = Dataset(root / "data")
    towers = Towers.load(root / "model", dataset)
    assert towers.info["unknown_user"] == UNKNOWN_USER
    counts = dataset.vocabulary_counts("user_id")
    assert len(counts) == 943 and counts.sum() == dataset.counts["train"]
    average = counts @ embed_users(towers.query, dataset.vocabulary("user_id")) / counts.sum()
    np.testing.assert_allclose(embed_users(towers.query, ["no-such-user"])[0], average, rtol=1e-5, atol=1e-6)
    served = fresh_query(root / "export" / "scann", ["no-such-user", "42"])["ids"]
    assert served == in_process_answers(root, ["no-such-user", "42"])[1] and served[0] != served[1]


def test_a_tree_index_and_its_saved_model_give_the_same_answers(tree_run):
    root, summary = tree_run
    assert summary["indexes"]["scann"]["mode"] == "tree" and summary["indexes"]["scann"]["num_leaves"] == 40
    assert summary["embeddings"]["candidates"] == 1682 and len(list((root / "embeddings").glob("part-*"))) == 4
    index, answers = in_process_answers(root, USERS)
    assert fresh_query(root / "export" / "scann", USERS)["ids"] == answers
    evaluation = json.loads((root / "metrics" / "index_eval.json").read_text())
    recall = evaluation["scann"]["recall_vs_brute_force"]["@10"]
    assert 0.0 < recall < 1.0  # a few of 40 leaves searched: approximate, and reported as such
    k_max = evaluation["scann"]["search_k"]
    fraction, per_result, per_k = index.cfg.search_row(k_max)  # --leaves-fraction 0.1: 4 of 40 leaves, whatever k
    assert (fraction, per_result) == (0.1, 0)
    expected = math.ceil(40 * fraction)
    assert evaluation["scann"]["search"]["leaves_to_search"] == index.default_leaves_to_search(k_max) == expected
    assert evaluation["scann"]["search"]["pre_reorder_num_neighbors"] == max(per_k * k_max, 30)
    exported = json.loads((root / "export" / "scann" / "export.json").read_text())["index"]
    assert exported["search_k"] == 10 and exported["search"]["leaves_to_search"] == index.default_leaves_to_search(10)
    assert exported["search_row"]["search_by_k"] == [list(r) for r in IndexConfig().search_by_k]
    assert exported["search_row"]["leaves_fraction"] == 0.1
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 0, verify.stderr[-2000:]
    for name in ("vocabularies", "query_tower", "candidate_tower", "embeddings", "index/scann", "export/scann"):
        assert f"ok  {name}" in verify.stdout


def test_without_scann_the_export_says_how_to_fix_it_and_recommend_falls_back(pipeline_run):
    root, summary, _ = pipeline_run
    args = ["recommend", "--saved-model", str(root / "export" / "scann"), "--user", "42", "-k", "3"]
    refused = subprocess.run([sys.executable, "-c", NO_SCANN, *args], capture_output=True, text=True)
    assert refused.returncode == 1
    assert "holds ScaNN ops but ScaNN is not importable here" in refused.stderr
    assert "pip install scann==1.4.2" in refused.stderr and "Traceback" not in refused.stderr
    fallback = subprocess.run([sys.executable, "-c", NO_SCANN, *args, "--run", str(root)], capture_output=True,
                              text=True)
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    assert "answering with BruteForce" in fallback.stderr
    assert top3(fallback.stdout) == summary["recommendations"]["brute_force"]
