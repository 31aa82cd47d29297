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
    # their settings are chosen as the quality report chooses them: a lambda it tries, a point of iALS's lattice
    chosen = result["baselines_chosen"]
    assert chosen["ease"]["lambda"] in bl.EASE_LAMBDAS or chosen["ease"]["lambda"] in (25.0, 2000.0)
    assert any(chosen["ials"] == bl.ials_setting((a, r)) for a in range(-4, 5) for r in range(-4, 5))
    assert "| iALS (folded in) |" in run.stdout
