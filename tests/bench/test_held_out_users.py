"""held_out_users.py: users left out of training, served from 10 of their items by the exported SavedModels in a
fresh process, beside popularity and EASE and iALS folded in."""

import json
import subprocess
import sys

import pytest

from benchscripts import BENCHMARKS

METHODS = {"model, scann SavedModel", "model, brute_force SavedModel", "popularity", "EASE (folded in)",
           "iALS (folded in)"}


@pytest.mark.slow  # prepare, train (the history preset, one epoch), index and export as commands, then serving
def test_held_out_users_are_served_beside_the_baselines_folded_in(ml100k, tmp_path):
    import scaleout.evaluate.baselines as bl

    out = tmp_path / "held_out_users.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "held_out_users.py"), "--movielens", str(ml100k),
                          "--train-args=--epochs 1", "--out", str(out)], capture_output=True, text=True,
                         timeout=1200, cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["held_out"]["users"] == 94 and result["train_args"] == "--epochs 1"
    for way in ("first items", "any items"):
        methods = result["ways"][way]["methods"]
        assert set(methods) == METHODS, way
        for name, m in methods.items():
            assert 0 < m["recall@10"] <= m["recall@50"] <= m["recall@100"] < 1, (way, name)
        # ScaNN scores 1,682 candidates exactly: both SavedModels answer the same lists
        assert methods["model, scann SavedModel"] == methods["model, brute_force SavedModel"]
    # folded in, the given items lift both baselines well above the same list for everyone
    anyway = result["ways"]["any items"]["methods"]
    for name in ("EASE (folded in)", "iALS (folded in)"):
        assert anyway[name]["recall@100"] > anyway["popularity"]["recall@100"] + 0.05, name
    # their settings are chosen as the quality report chooses them, on the kept users' validation cut: EASE's from
    # the lambdas it tries, iALS's where its climb from the lattice's start stopped, each the best of those tried
    chosen = result["baselines_chosen"]
    settings = {name: [{k: v for k, v in t.items() if k != bl.VALIDATION_METRIC} for t in c["tried"]]
                for name, c in chosen.items()}
    for name, c in chosen.items():
        best = max(range(len(c["tried"])), key=lambda i: c["tried"][i][bl.VALIDATION_METRIC] or -1)
        assert len(c["tried"]) > 1 and c["setting"] == settings[name][best], name
        assert 0 < c["chosen_on"]["users"] <= c["chosen_on"]["of_users"] <= 943 - 94, name
    assert set(chosen) == {"ease", "ials"} and bl.ials_setting((0, 0)) in settings["ials"]
    assert set(bl.EASE_LAMBDAS) <= {s["lambda"] for s in settings["ease"]}
    assert "| iALS (folded in) |" in run.stdout
