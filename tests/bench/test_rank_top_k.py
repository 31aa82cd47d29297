"""benchmarks/rank_top_k.py on a small catalogue: both metrics over the same queries, written side by side."""

import json

from benchscripts import load


def test_the_benchmark_reports_both_metrics_and_the_own_rows_that_tfrs_ranks_above_their_positive(tmp_path):
    out = tmp_path / "rank_top_k.json"
    result = load("rank_top_k").main(["--queries", "9000", "--candidates", "500", "--dim", "64", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["queries"] == 9000 and set(result["seconds"]) == {"tfrs", "rank_top_k"}
    ours, theirs = result["top_k"]["rank_top_k"], result["top_k"]["tfrs"]
    # TFRS loses the top-1 hits whose own row rounds above them; it never finds more than the exact rank.
    assert result["own_row_above_its_positive"] > 0.05
    assert ours["1"] > theirs["1"] + 0.02
    assert all(ours[k] >= theirs[k] - 2e-4 for k in ours)  # a near tie of another row may round apart
    assert ours["100"] - theirs["100"] < 0.01
