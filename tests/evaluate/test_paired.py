"""The model over a baseline on the same test users: the ratio and its paired interval, by hand and against a
bootstrap over users."""

import math

import numpy as np
import pytest

from scaleout.evaluate.paired import Z95, over_each, paired_comparison, paired_ratio, ratio_text, take_per_user


def test_the_ratio_and_its_interval_by_hand_narrowing_with_the_sample_and_none_for_the_whole_population():
    ours, theirs = np.array([1.0, 0.0, 2.0, 1.0]), np.array([1.0, 1.0, 1.0, 0.0])
    # A = 4, B = 3; d_u = a_u / 4 - b_u / 3 = -1/12, -4/12, 2/12, 3/12 (summing to 0): sample variance 30/144/3
    var = 4 * (1 + 16 + 4 + 9) / 144 / 3
    out = paired_ratio(ours, theirs)
    assert out["ratio"] == pytest.approx(4 / 3)
    half = Z95 * math.sqrt(var)
    assert out["ci95"] == pytest.approx([4 / 3 * math.exp(-half), 4 / 3 * math.exp(half)])
    sampled = paired_ratio(ours, theirs, population_users=40)  # 4 of 40 users drawn: (1 - 4/40) of the variance
    assert sampled["ci95"][1] == pytest.approx(4 / 3 * math.exp(Z95 * math.sqrt(0.9 * var)))
    assert paired_ratio(ours, theirs, population_users=4)["ci95"] == pytest.approx([4 / 3, 4 / 3])
    assert ratio_text(out) == f"1.333 ({out['ci95'][0]:.3f}-{out['ci95'][1]:.3f})"


def test_the_interval_is_a_bootstrap_over_users_and_far_narrower_paired_than_apart():
    rng = np.random.default_rng(0)
    users = 1500
    rows = rng.integers(5, 60, users)
    skill = rng.beta(2, 8, users)  # how easy each user is, for both methods
    ours = rng.binomial(rows, np.clip(skill * 1.05, 0, 1)).astype(float)
    theirs = rng.binomial(rows, skill).astype(float)
    low, high = paired_ratio(ours, theirs)["ci95"]
    draws = rng.integers(0, users, (4000, users))  # users resampled with replacement, each keeping both sums
    boot = ours[draws].sum(axis=1) / theirs[draws].sum(axis=1)
    assert [low, high] == pytest.approx(np.percentile(boot, [2.5, 97.5]), abs=0.003)
    apart = theirs[rng.integers(0, users, (4000, users))].sum(axis=1)  # the two resampled independently
    unpaired = np.percentile(ours[draws].sum(axis=1) / apart, [2.5, 97.5])
    assert high - low < (unpaired[1] - unpaired[0]) / 2


def test_no_hits_give_no_ratio_or_no_interval_and_different_users_are_refused():
    assert paired_ratio(np.array([1.0, 2.0]), np.zeros(2)) == {"ratio": None, "ci95": None}
    assert paired_ratio(np.zeros(2), np.array([1.0, 2.0])) == {"ratio": 0.0, "ci95": None}
    assert ratio_text({"ratio": None, "ci95": None}) == "n/a (the baseline has no hits)"
    assert paired_ratio(np.array([3.0]), np.array([2.0])) == {"ratio": 1.5, "ci95": [1.5, 1.5]}
    with pytest.raises(ValueError, match="different users"):
        paired_ratio(np.ones(3), np.ones(4))
    sums = {"rows": np.array([2, 3]), "t": {"recall@10": np.array([1.0, 2.0]), "recall@100": np.array([2.0, 3.0])}}
    other = {"rows": np.array([2, 3]), "t": {"recall@10": np.array([1.0, 1.0]), "recall@100": np.array([2.0, 2.0])},
             "u": {"recall@10": np.ones(2), "recall@100": np.ones(2)}}
    out = paired_comparison(sums, other)
    assert set(out) == {"t"} and out["t"]["recall@10"]["ratio"] == 1.5 and out["t"]["recall@100"]["ratio"] == 1.25
    with pytest.raises(ValueError, match="different test splits"):
        paired_comparison(sums, {**other, "rows": np.array([3, 2])})
    # a report's methods give up their sums (its JSON keeps none); a skipped one has none to give
    methods = {"ease": {"t": {"recall@10": 0.5}, "per_user": other}, "big": {"skipped": "too large"}}
    taken = take_per_user(methods)
    assert set(taken) == {"ease"} and taken["ease"] is other and "per_user" not in methods["ease"]
    assert over_each(sums, taken)["ease"] == out
