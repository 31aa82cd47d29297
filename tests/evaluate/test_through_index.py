"""The overlap of an approximate index's answers with BruteForce's, counted batch by batch as sets would."""

import numpy as np

from scaleout.evaluate.through_index import shared_per_row


def test_shared_ids_per_row_match_python_sets_with_repeats_and_padding():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30, (500, 10)).astype(str)  # repeats within a row, as padded answers have
    b = rng.integers(0, 30, (500, 10)).astype(str)
    b[:50] = a[:50][:, ::-1]  # rows with every id shared
    a[50:60] = ""  # rows of padding only
    want = [len(set(x) & set(y)) for x, y in zip(a, b)]
    np.testing.assert_array_equal(shared_per_row(a, b), want)
    assert max(want) == 10 and 0 in want  # both ends are exercised
    np.testing.assert_array_equal(shared_per_row(a.astype(object), b.astype(object)), want)


def test_a_sample_of_users_through_the_indexes_is_quality_s_draw_with_intervals_that_hold(tree_run, tmp_path):
    import json
    import shutil

    import pytest

    from scaleout.data.dataset import Dataset
    from scaleout.evaluate.protocols import load, sample_users
    from scaleout.evaluate.through_index import evaluate_through_indexes
    from scaleout.rundir import RunDir

    root = tmp_path / "run"
    shutil.copytree(tree_run[0], root)
    run = RunDir(root)
    full = evaluate_through_indexes(run)
    whole = evaluate_through_indexes(run, sample_users=10**6)  # every user drawn: each interval is one point
    part = evaluate_through_indexes(run, sample_users=200, seed=5)
    test, users = sample_users(load(Dataset(run.data)).test, 200, seed=5)  # what `scaleout quality` would rank
    assert part["sample"] == {"users": 200, "of_users": users, "rows": len(test.users),
                              "of_rows": full["test_examples"], "seed": 5, "confidence": 0.95}
    assert part["test_examples"] == len(test.users) < whole["test_examples"] == full["test_examples"]
    assert json.loads((root / "metrics" / "index_eval.json").read_text())["sample"]["users"] == 200
    top100 = "factorized_top_k/top_100_categorical_accuracy"
    for kind in ("brute_force", "scann"):
        names = [n for n in full[kind] if n.startswith("factorized_top_k/")]
        assert len(names) == 5 and "ci95" not in full[kind]
        for name in names:  # the per-user hits behind the intervals count what FactorizedTopK counts
            assert whole[kind][name] == pytest.approx(full[kind][name], abs=1e-6)
            assert whole[kind]["ci95"][name] == pytest.approx([full[kind][name]] * 2, abs=1e-6)
            lo, hi = part[kind]["ci95"][name]
            assert lo <= part[kind][name] + 1e-6 and part[kind][name] - 1e-6 <= hi
        lo, hi = part[kind]["ci95"][top100]
        assert 0 < hi - lo < 0.2 and lo - 0.02 <= full[kind][top100] <= hi + 0.02, (kind, lo, hi)
    assert set(part["scann"]["recall_vs_brute_force"]) == {"@10", "@100"}  # the tree's loss, on the sample's rows
