"""quality_ensemble.py's mixtures of a model's scores with EASE's (--with-ease: each user's row standardised) and
with iALS's (--with-ials: raw, a dot product)."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from benchscripts import BENCHMARKS, load


def standardised():
    return load("quality_ensemble").standardised


def test_rows_are_standardised_and_a_row_of_one_value_gives_zeros():
    f = standardised()
    scores = np.array([[1.0, 2.0, 3.0, 6.0], [10.0, 0.0, 5.0, 5.0], [4.0, 4.0, 4.0, 4.0]], np.float32)
    z = f(scores)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=1), [1.0, 1.0, 0.0], atol=1e-6)
    assert np.isfinite(z).all()
    # Each row keeps its order, whatever its scale: a mixture weighs the two by W alone.
    assert (np.argsort(z[:2], axis=1) == np.argsort(scores[:2], axis=1)).all()
    np.testing.assert_allclose(f(scores[:2] * 1000 + 7), z[:2], atol=1e-5)


def test_the_weight_moves_the_ranking_from_the_model_to_ease():
    f = standardised()
    model = np.array([[3.0, 2.0, 1.0, 0.0]])  # one user: the model's order is items 0, 1, 2, 3
    ease = np.array([[0.0, 0.1, 0.2, 9.0]])  # EASE's is 3, 2, 1, 0, on another scale
    order = [list(np.argsort(-(f(model) + w * f(ease)), axis=1)[0]) for w in (0.0, 1.0, 100.0)]
    assert order[0] == [0, 1, 2, 3] and order[2] == [3, 2, 1, 0]
    assert order[1] == [0, 3, 1, 2]  # an even weight moves EASE's top item up, not to the top


@pytest.mark.slow  # trains the quality preset twice on one validation cut of ml-100k
def test_the_script_scores_the_models_their_ensemble_and_the_mixtures_with_ease_and_ials(ml100k, tmp_path):
    out = tmp_path / "ensemble.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "quality_ensemble.py"), "--movielens", str(ml100k),
                          "--cuts", "1", "--models", "2", "--with-ease", "0", "1000", "--with-ials", "1e6",
                          "--ials-settings", "16:3:30", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    (cut,) = result["per_cut"]
    assert [m["preset"] for m in cut["models"]] == ["quality", "quality"] and list(cut["ensembles"]) == ["2"]
    assert result["data"] == f"movielens {ml100k}"
    first, ease = cut["models"][0], cut["ease"]
    for scores in (*cut["models"], cut["ensembles"]["2"], ease):
        assert 0 < scores["recall@10"] < scores["recall@100"] < 1
    # Standardising a row keeps its order: with no EASE the mixture ranks as the first model does.
    assert cut["with_ease"]["0.0"] == {k: first[k] for k in ("recall@10", "recall@100")}
    # With EASE weighed a thousand times the model, the mixture ranks as EASE does (up to near-ties).
    assert cut["with_ease"]["1000.0"] == pytest.approx(ease, abs=0.002)
    assert result["mean"]["ease"] == ease and result["mean"]["+ 1000.0 x EASE"] == cut["with_ease"]["1000.0"]
    assert "model 0 + 1000.0 x EASE" in run.stdout
    # iALS chosen on the cut by the baseline's climb; weight 0 is the model alone, under both protocols (the
    # user's training items left in can only push a held-out item down: the tutorial's top-100 is the lower)
    assert cut["ials_setting"]["factors"] == 128 and set(cut["with_ials"]) == {"0.0", "1000000.0"}
    alone, ials = cut["with_ials"]["0.0"], cut["with_ials"]["1000000.0"]
    assert {k: alone[k] for k in ("recall@10", "recall@100")} == {k: first[k] for k in ("recall@10", "recall@100")}
    for scores in (alone, ials):
        assert 0 < scores["tutorial@100"] < scores["recall@100"] and 0 < scores["recall@10"] < scores["recall@100"]
    assert ials != alone and result["mean"]["+ 1000000.0 x iALS"] == ials
    assert "model 0 + 1000000.0 x iALS" in run.stdout and "tutorial top-100" in run.stdout
    # A setting of its own (16 factors): alone, and weighed a million times the model it ranks as alone does
    assert result["ials_settings"] == [{"factors": 16, "alpha": 3.0, "regularization": 30.0}]
    own = cut["ials_settings"]["16:3:30"]
    assert set(own) == {"alone", "1000000.0"} and own["alone"] != ials
    assert own["1000000.0"] == pytest.approx(own["alone"], abs=0.002)
    assert result["mean"]["iALS 16:3:30 alone"] == own["alone"]
    assert result["mean"]["1000000.0 x iALS 16:3:30"] == own["1000000.0"]
    assert "iALS 16:3:30 alone" in run.stdout and "model 0 + 1000000.0 x iALS 16:3:30" in run.stdout


def test_ials_settings_are_read_and_checked():
    parse = load("quality_ensemble").ials_option
    assert parse("256:0.5:60") == (256, 0.5, 60.0)
    for bad in ("128:3", "128:3:30:1", "x:3:30", "0:3:30", "128:0:30", "128:3:-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="iALS setting"):
            parse(bad)


def test_the_weight_chosen_is_the_best_recall_at_10_that_keeps_recall_at_100():
    choose = load("quality_ensemble").choose_weight

    def mean(points):
        return {f"+ {w} x iALS": {"recall@10": r10, "recall@100": r100} for w, (r10, r100) in points.items()}
    # W 4 has the best recall@10 but loses recall@100; W 2 keeps it (equal counts as kept)
    points = {0.0: (0.150, 0.610), 1.0: (0.152, 0.612), 2.0: (0.153, 0.610), 4.0: (0.155, 0.608)}
    assert choose(mean(points), [1.0, 2.0, 4.0]) == 2.0
    # none lifts recall@10 while keeping recall@100: none is served
    assert choose(mean({0.0: (0.150, 0.610), 1.0: (0.149, 0.615), 2.0: (0.160, 0.600)}), [1.0, 2.0]) == 0.0
    assert choose({}, []) == 0.0


def test_the_script_cuts_a_prepared_dataset_of_ones_own_and_chooses_w(tmp_path):
    from scaleout.config import DataConfig
    from scaleout.data.prepare import prepare

    prepare(DataConfig(source="synthetic", synthetic_interactions=6000, synthetic_users=300, synthetic_items=200,
                       seed=5), tmp_path / "own")
    out = tmp_path / "ensemble.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "quality_ensemble.py"), "--prepared", str(tmp_path / "own"),
                          "--cuts", "1", "--models", "1", "--with-ials", "0.5", "4", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    (cut,) = result["per_cut"]
    assert set(cut["with_ials"]) == {"0.0", "0.5", "4.0"} and result["data"] == f"prepared {tmp_path / 'own'}"
    setting = cut["ials_setting"]  # what to train --ials-alpha and --ials-l2 with, printed
    assert (f"cut 0, iALS by the quality report's climb: factors 128, alpha {setting['alpha']:g}, "
            f"L2 {setting['regularization']:g}") in run.stdout
    assert result["ials_weight_chosen"] == load("quality_ensemble").choose_weight(result["mean"], [0.5, 4.0])
    assert f"W by the rule (the best mean recall@10 of the weights that keep the model's mean recall@100): " \
           f"{result['ials_weight_chosen']:g}" in run.stdout
    both = subprocess.run([sys.executable, str(BENCHMARKS / "quality_ensemble.py"), "--prepared", str(tmp_path),
                           "--movielens", str(tmp_path)], capture_output=True, text=True, cwd=BENCHMARKS)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
