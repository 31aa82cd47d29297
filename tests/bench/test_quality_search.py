"""quality_search.py and quality_cuts.py on a tiny grid: an entry whose loss becomes NaN is recorded and left out
of the choice, and the search goes on with the rest."""

import json

import pytest

from benchscripts import load
from conftest import movielens_100k

GRID = """\
defaults: {batch_size: 4096, epochs: 2, embedding_dim: 8}
entries:
  diverges: {optimizer: sgd, learning_rate: 1.0e+30, features: [age, gender]}
  plain: {}
"""


@pytest.fixture()
def grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def test_a_diverging_entry_is_recorded_and_the_search_chooses_among_the_rest(tmp_path, grid):
    out, report = tmp_path / "search.json", tmp_path / "report"
    load("quality_search").main(["--movielens", str(movielens_100k()), "--grid", str(grid), "--out", str(out),
                                 "--report", str(report)])
    search = json.loads(out.read_text())
    entries = {e["name"]: e for e in search["entries"]}
    assert entries["diverges"]["diverged"].startswith("in epoch 1: ") and entries["diverges"]["best"] is None
    assert entries["plain"]["best"]["epoch"] in (1, 2) and "diverged" not in entries["plain"]
    assert search["choice"]["name"] == "plain" and search["rule"]["within"] == ["plain"]
    text = (report / "report.md").read_text()
    assert "| diverges | diverged in epoch 1: " in text and (report / "validation_curves.png").stat().st_size
    # the row names the features the entry was given, not "ids only"
    row = next(line for line in text.splitlines() if line.startswith("| diverges |"))
    assert row.endswith("| age, gender |"), row


def test_quality_cuts_keep_a_diverging_entry_out_of_the_floors_choice(tmp_path, grid):
    out = tmp_path / "cuts.json"
    load("quality_cuts").main(["--movielens", str(movielens_100k()), "--grid", str(grid), "--cuts", "1",
                               "--tutorial-floor", "0.0", "--out", str(out), "--plot", str(tmp_path / "cuts.png")])
    results = json.loads(out.read_text())
    entries = {e["name"]: e for e in results["entries"]}
    assert entries["diverges"]["diverged"][0].startswith("cut 0 in epoch 1: ")
    assert "mean_curve" not in entries["diverges"] and len(entries["plain"]["mean_curve"]) == 2
    assert results["choice"]["name"] == "plain" and (tmp_path / "cuts.png").stat().st_size
