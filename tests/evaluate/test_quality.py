"""Honest evaluation: ranks by hand, seen-item exclusion, baselines' maths, agreement with FactorizedTopK."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from scaleout.errors import ArtifactError
from scaleout.evaluate.baselines import climb, ease, ials_setting, past_the_edges, popularity_scores
from scaleout.evaluate.protocols import Split, rank_metrics, rank_protocols


def test_rank_metrics_by_hand_with_and_without_seen_items():
    scores = np.array([[0.9, 0.5, 0.7, 0.1],    # user 0
                       [0.2, 0.8, 0.6, 0.4]], np.float32)  # user 1
    test = Split(users=np.array([0, 1, 0]), items=np.array([1, 3, 3]))
    # ranks (candidates strictly above the true one): row 0 -> 2, row 1 -> 2, row 2 -> 3
    m = rank_metrics(lambda u: scores[u], test, None, ks=(1, 3, 4), ndcg_ks=(3,))
    assert m["recall@1"] == 0 and m["recall@3"] == pytest.approx(2 / 3) and m["recall@4"] == 1.0
    assert m["ndcg@3"] == pytest.approx((2 / np.log2(4)) / 3)
    seen = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 1]], np.float32))  # user 1 saw item 3: the true one stays
    m = rank_metrics(lambda u: scores[u], test, seen, ks=(1, 2), ndcg_ks=(1,))
    # row 0: 0 and 2 removed -> rank 0; row 1: item 1 removed -> rank 1; row 2: rank 1 (item 1 above)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == 1.0 and m["ndcg@1"] == pytest.approx(1 / 3)


def test_tied_candidates_are_ranked_around_the_true_one_in_random_order_in_expectation():
    # Row 0: one candidate above the true item 0 and two tied with it: places 1, 2, 3 equally likely.
    scores = np.array([[0.5, 0.5, 0.9, 0.5]], np.float32)
    m = rank_metrics(lambda u: scores[u], Split(np.array([0]), np.array([0])), None, ks=(1, 2, 3, 4), ndcg_ks=(3,))
    assert m["recall@1"] == 0 and m["recall@2"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(2 / 3)
    assert m["recall@4"] == 1 and m["ndcg@3"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 3)
    # A constant scorer (a zero query) is at chance, k / n, not a hit on every row.
    n = 50
    test = Split(np.array([0, 0, 1]), np.array([3, 7, 0]))
    flat = rank_metrics(lambda u: np.zeros((len(u), n), np.float32), test, None, ks=(1, 10), ndcg_ks=(10,))
    assert flat["recall@1"] == pytest.approx(1 / n) and flat["recall@10"] == pytest.approx(10 / n)
    assert flat["ndcg@10"] == pytest.approx(sum(1 / np.log2(p + 2) for p in range(10)) / n)
    # A seen item taken out of the ranking (-inf) is no tie: user 0 saw item 7, so row 0 ties with n - 2 others;
    # row 1's true item is 7 itself, whose own entry is out, so it ties with the n - 1 others.
    seen = sp.csr_matrix((np.ones(1), ([0], [7])), shape=(2, n))
    out = rank_metrics(lambda u: np.zeros((len(u), n), np.float32), test, seen, ks=(1,), ndcg_ks=())
    assert out["recall@1"] == pytest.approx((1 / (n - 1) + 1 / n + 1 / n) / 3)


def test_nan_scores_are_refused_naming_the_user():
    scores = np.array([[0.1, 0.2], [np.nan, 0.3]], np.float32)
    with pytest.raises(ArtifactError, match="the scores of 1 of 2 test users in a batch hold NaN \\(the first: user "
                                            "row 1"):
        rank_metrics(lambda u: scores[u], Split(np.array([0, 1]), np.array([0, 1])), None)


def test_a_test_item_outside_the_candidates_is_a_miss():
    test = Split(users=np.array([0, 0]), items=np.array([0, -1]))
    m = rank_metrics(lambda u: np.ones((len(u), 2), np.float32), test, None, ks=(2,), ndcg_ks=())
    assert m["recall@2"] == 0.5


def test_popularity_is_a_strict_order_and_breaks_ties_of_other_scores():
    train = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]], np.float32))  # counts 1, 3, 1
    pop = popularity_scores(train)
    assert list(np.argsort(-pop)) == [1, 0, 2]
    # All scores tied: the rank is the true item's place in the popularity order (1, 0, 2).
    test = Split(users=np.array([0, 0, 0]), items=np.array([1, 0, 2]))
    tied = rank_metrics(lambda u: np.zeros((len(u), 3), np.float32), test, None, ks=(1, 2), ndcg_ks=(),
                        tiebreak=pop)
    assert tied["recall@1"] == pytest.approx(1 / 3) and tied["recall@2"] == pytest.approx(2 / 3)
    # Distinct scores keep their order whatever the popularity: item 2 first, then 1, then 0.
    ordered = rank_metrics(lambda u: np.tile(np.array([0.0, 1.0, 2.0], np.float32), (len(u), 1)), test, None,
                           ks=(1, 2), ndcg_ks=(), tiebreak=pop)
    assert ordered["recall@1"] == pytest.approx(1 / 3) and ordered["recall@2"] == pytest.approx(2 / 3)
    assert rank_metrics(lambda u: np.tile(np.array([0.0, 1.0, 2.0], np.float32), (len(u), 1)),
                        Split(np.array([0]), np.array([2])), None, ks=(1,), ndcg_ks=(), tiebreak=pop)["recall@1"] == 1


def test_each_test_user_is_scored_once_for_both_protocols():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 30)).astype(np.float32)
    test = Split(users=rng.integers(0, 50, 400), items=rng.integers(-1, 30, 400))  # many rows a user, some -1
    seen = sp.csr_matrix((rng.random((50, 30)) < 0.2).astype(np.float32))
    calls = []

    def score(users):
        calls.append(users.copy())
        return scores[users]
    both = rank_protocols(score, test, {"tutorial": None, "exclude_seen": seen}, batch=7)
    scored = np.concatenate(calls)
    assert len(scored) == len(np.unique(scored)) == len(np.unique(test.users[test.items >= 0]))
    # The same figures as ranking row by row, by hand.
    for name, mask in (("tutorial", None), ("exclude_seen", seen)):
        ranks = []
        for u, i in zip(test.users, test.items):
            if i < 0:
                continue
            row = scores[u].copy()
            if mask is not None:
                drop = mask[u].toarray().ravel().astype(bool)
                drop[i] = False
                row[drop] = -np.inf
            ranks.append((row > scores[u, i]).sum())
        ranks = np.array(ranks)
        for k in (1, 5, 10):
            assert both[name][f"recall@{k}"] == pytest.approx((ranks < k).sum() / len(test.users))
        assert both[name]["ndcg@10"] == pytest.approx(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0).sum()
                                                      / len(test.users))


def test_ease_columns_are_ridge_regressions_on_the_other_items():
    rng = np.random.default_rng(0)
    x = (rng.random((60, 6)) < 0.4).astype(np.float64)
    lam = 3.0
    b = ease(sp.csr_matrix(x), lam)
    assert np.allclose(np.diag(b), 0.0)
    j, others = 2, [0, 1, 3, 4, 5]
    a = x[:, others]
    ridge = np.linalg.solve(a.T @ a + lam * np.eye(5), a.T @ x[:, j])
    np.testing.assert_allclose(b[others, j], ridge, rtol=1e-6, atol=1e-9)


def test_ials_search_climbs_to_the_best_setting_and_scores_each_point_once():
    calls = []

    def bowl(point):  # one peak at (2, -1)
        calls.append(point)
        return -((point[0] - 2) ** 2 + (point[1] + 1) ** 2)

    here, scores = climb(bowl)
    assert here == (2, -1) and len(calls) == len(set(calls)) == len(scores)
    assert scores[here] == max(scores.values()) == 0
    # at most max_fits points: it stops on the way
    here, scores = climb(bowl, max_fits=5)
    assert len(scores) == 5 and here == (1, 0)

    def ridge(point):  # a plateau beyond (0, 1): ties do not move it
        return min(point[1], 1) - abs(point[0])

    here, scores = climb(ridge)
    assert here == (0, 1) and set(scores) == {(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, 1), (1, -1), (1, 1),
                                              (0, 2), (-1, 2)}

    def diagonal(point):  # iALS's ridge: along alpha up, ratio down (a + r = 1 here), rising to (-1, 2)
        return -10 * abs(point[0] + point[1] - 1) - abs(point[0] + 1)

    # the axis moves alone stop at (0, 1), where both axes leave the ridge; the diagonal moves walk along it
    here, scores = climb(diagonal)
    assert here == (-1, 2) and scores[here] == 0 and max(scores.values()) == 0
    # NaN (an empty validation cut's recall) ranks below every number
    here, scores = climb(lambda p: float("nan") if p != (0, -1) else 0.5)
    assert here == (0, -1) and scores[(0, 0)] == -np.inf
    here, scores = climb(lambda p: float("nan"))
    assert here == (0, 0) and len(scores) == 7
    # the lattice: alpha from 3 by 1.5x, the L2 from 10 x alpha by sqrt(2)x
    assert ials_setting((0, 0)) == {"factors": 128, "alpha": 3.0, "regularization": 30.0}
    assert ials_setting((1, 2)) == {"factors": 128, "alpha": 4.5, "regularization": 90.0}
    assert ials_setting((-1, -1)) == {"factors": 128, "alpha": 2.0, "regularization": 14.14}


def test_a_best_lambda_at_the_grids_edge_is_followed_past_it():
    grid = (50.0, 100.0, 200.0, 500.0, 1000.0)
    peak = lambda best: (lambda lam: -abs(np.log(lam / best)))  # noqa: E731
    best, scores = past_the_edges(grid, peak(300.0))  # inside the grid: nothing more is scored
    assert best == 200.0 and sorted(scores) == list(grid)
    best, scores = past_the_edges(grid, peak(2500.0))  # above it: 2,000 and 4,000, which is worse, are scored
    assert best == 2000.0 and sorted(scores) == [*grid, 2000.0, 4000.0]
    best, scores = past_the_edges(grid, peak(10.0))  # below it: 25, 12.5, 6.25 (worse)
    assert best == 12.5 and sorted(scores) == [6.25, 12.5, 25.0, *grid]
    best, scores = past_the_edges(grid, peak(1e9))  # at most 4 more
    assert best == 16000.0 and len(scores) == 9
    best, scores = past_the_edges(grid, lambda lam: float("nan") if lam == 1000.0 else lam)  # NaN is the worst
    assert best == 500.0 and scores[1000.0] == -np.inf and len(scores) == 5


def test_tutorial_protocol_agrees_with_factorized_top_k_and_exclusion_only_helps(pipeline_run):
    from scaleout.data.dataset import Dataset
    from scaleout.evaluate.protocols import evaluate_scores, load
    from scaleout.evaluate.quality import model_scorer
    from scaleout.rundir import RunDir
    from scaleout.train.saved import Towers

    run = RunDir(pipeline_run[0])
    dataset = Dataset(run.data)
    data = load(dataset)
    score = model_scorer(Towers.load(run.model, dataset), data)
    m = evaluate_scores(score, data)
    tfrs = json.loads(run.eval_metrics.read_text())["metrics"]
    for k in (1, 5, 10, 50, 100):
        # `scaleout evaluate`'s FactorizedTopK metrics (scaleout.train.ranking) leave the true candidate's own
        # row out of its rank and share ties as the protocol does: the same figures (TFRS's own metric can rank
        # the true candidate below its own copy by float noise, one place lower).
        ours, theirs = m["tutorial"][f"recall@{k}"], tfrs[f"factorized_top_k/top_{k}_categorical_accuracy"]
        assert ours == pytest.approx(theirs, abs=1e-4), (k, ours, theirs)
        assert m["exclude_seen"][f"recall@{k}"] >= ours
    assert m["exclude_seen"]["ndcg@10"] >= m["tutorial"]["ndcg@10"] > 0


def _split(rng, users=400, rows=2400, items=40):
    return Split(users=rng.integers(0, users, rows), items=rng.integers(-1, items, rows))


def test_per_user_sums_add_up_to_the_metrics_and_a_sample_keeps_whole_users():
    from scaleout.evaluate.protocols import sample_users

    rng = np.random.default_rng(1)
    scores = rng.standard_normal((400, 40)).astype(np.float32)
    test = _split(rng)
    out = rank_protocols(lambda u: scores[u], test, {"tutorial": None}, per_user=True)
    per_user = out["per_user"]
    assert per_user["rows"].sum() == len(test.users) and len(per_user["rows"]) == len(np.unique(test.users))
    for metric, value in out["tutorial"].items():
        assert per_user["tutorial"][metric].sum() / len(test.users) == pytest.approx(value)
    sample, population = sample_users(test, 50, seed=3)
    assert population == len(np.unique(test.users)) and len(np.unique(sample.users)) == 50
    for u in np.unique(sample.users):  # every row of a drawn user, no row of another
        assert (sample.users == u).sum() == (test.users == u).sum()
    again, _ = sample_users(test, 50, seed=3)
    assert (again.users == sample.users).all() and (again.items == sample.items).all()
    whole, _ = sample_users(test, 10_000, seed=3)
    assert whole is test


def test_confidence_intervals_by_hand_shrink_with_the_sample_and_vanish_for_the_whole_population():
    from scaleout.evaluate.protocols import confidence_intervals

    # 4 users with 1, 2, 3, 2 rows and 1, 0, 2, 1 hits: r = 4 / 8; residuals 0.5, -1, 0.5, 0
    per_user = {"rows": np.array([1, 2, 3, 2]), "p": {"recall@10": np.array([1.0, 0.0, 2.0, 1.0])}}
    var = (1 - 4 / 40) * (0.25 + 1 + 0.25) / 3 / 4 / 2.0 ** 2
    lo, hi = confidence_intervals(per_user, 40)["p"]["recall@10"]
    assert (lo + hi) / 2 == pytest.approx(0.5) and (hi - lo) / 2 == pytest.approx(1.96 * np.sqrt(var))
    assert confidence_intervals(per_user, 4)["p"]["recall@10"] == pytest.approx([0.5, 0.5])  # the population itself
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((4000, 60)).astype(np.float32)
    test = _split(rng, users=4000, rows=24_000, items=60)
    full = rank_protocols(lambda u: scores[u], test, {"t": None})["t"]["recall@10"]
    from scaleout.evaluate.protocols import sample_users

    widths = []
    for users in (200, 2000):
        sample, population = sample_users(test, users, seed=0)
        out = rank_protocols(lambda u: scores[u], sample, {"t": None}, per_user=True)
        lo, hi = confidence_intervals(out["per_user"], population)["t"]["recall@10"]
        assert lo <= full <= hi, (users, lo, full, hi)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_on_many_users_the_baselines_settings_are_chosen_on_a_sample_of_the_validation_users(monkeypatch, caplog):
    import logging

    import scaleout.evaluate.baselines as bl
    from scaleout.evaluate.protocols import Data, sample_users

    rng = np.random.default_rng(1)
    data = Data(np.array([f"u{i}" for i in range(40)]), np.array([f"m{i}" for i in range(80)]),
                train=Split(rng.integers(0, 40, 900), (rng.zipf(1.3, 900) - 1) % 80),
                test=Split(rng.integers(0, 40, 80), rng.integers(0, 80, 80)))
    monkeypatch.setattr(bl, "VALIDATION_USERS", 6)
    with caplog.at_level(logging.INFO, logger="scaleout.evaluate.baselines"):
        ease = bl.baselines(data, ("ease",))["ease"]
    chosen = ease["setting"]["lambda"]
    fit, val = bl.validation_cut(data)
    fit_m = data.matrix(fit)
    val6, population = sample_users(val, 6)
    assert population == len(np.unique(val.users)) > 30 and len(np.unique(val6.users)) == 6
    assert f"chosen on the validation rows of 6 of its {population} users" in caplog.text
    assert ease["chosen_on"] == {"users": 6, "of_users": population}
    # every lambda tried is recorded with its score, and that score is recall@10 on those 6 users' rows, by hand
    tried = {t["lambda"]: t["validation_recall@10"] for t in ease["tried"]}
    assert len(tried) == len(ease["tried"]) >= len(bl.EASE_LAMBDAS) and set(bl.EASE_LAMBDAS) <= set(tried)
    by_hand = {lam: rank_metrics(bl._ease_scorer(fit_m, lam), val6, fit_m, ks=(10,), ndcg_ks=(),
                                 tiebreak=bl.popularity_scores(data.matrix(data.train)))["recall@10"] for lam in tried}
    assert by_hand == tried
    assert chosen == max(sorted(by_hand), key=by_hand.get)
    from scaleout.evaluate.quality import chosen_line  # the report's line under EASE's rows says all of it

    assert chosen_line(ease) == (f"chosen: lambda {chosen:g} (validation recall@10 {tried[chosen]:.4f}, the best of "
                                 f"{len(tried)} tried on 6 of {population} users' validation rows)")
    assert len(set(by_hand.values())) > 1  # the choice was not a tie of every lambda


def test_the_reports_line_for_a_baseline_whose_every_fit_diverged_says_there_was_no_score_to_choose_by():
    from scaleout.evaluate.quality import chosen_line

    # each score NaN, recorded as None (baselines.tried_settings)
    diverged = {"setting": {"lambda": 50.0}, "chosen_on": {"users": 9, "of_users": 9},
                "tried": [{"lambda": lam, "validation_recall@10": None} for lam in (50.0, 100.0)]}
    assert chosen_line(diverged) == ("chosen: lambda 50 (validation recall@10 none: every fit diverged, the best of 2 "
                                     "tried on 9 users' validation rows)")


def test_a_baseline_that_cannot_fit_is_skipped_with_a_note_and_the_report_still_reads():
    from scaleout.evaluate.baselines import baselines, ease_bytes
    from scaleout.evaluate.protocols import Data
    from scaleout.evaluate.quality import format_report, headline, quality_sentence

    rng = np.random.default_rng(0)
    data = Data(np.array([f"u{i}" for i in range(30)]), np.array([f"m{i}" for i in range(20)]),
                train=Split(rng.integers(0, 30, 300), rng.integers(0, 20, 300)),
                test=Split(rng.integers(0, 30, 60), rng.integers(0, 20, 60)))
    assert ease_bytes(20) == 3 * 8 * 400
    out = baselines(data, ("popularity", "ease"), ease_max_gib=9000 / 2**30)
    assert "recall@10" in out["popularity"]["exclude_seen"]
    assert out["ease"] == {"skipped": "EASE needs about 0.0 GiB for its 20 x 20 item matrices; the limit is 0.0 GiB "
                                      "(--ease-max-gib; default a third of this machine's memory)"}
    assert "lambda" in baselines(data, ("ease",), ease_max_gib=10_000 / 2**30)["ease"]["setting"]  # 9,600 bytes fit
    model = out["popularity"]
    report = {"ks": [1, 5, 10, 50, 100], "ndcg_ks": [10, 100], "model": model, "baselines": out}
    assert "ease         skipped: EASE needs" in format_report(report)
    assert set(headline(report)) == {"model", "popularity"} and "best baseline popularity" in quality_sentence(report)


def test_quality_on_a_sample_of_users_states_its_size_and_intervals_and_skips_what_cannot_fit(pipeline_run, tmp_path):
    from conftest import run_cli
    from runs import copy_trained

    root = copy_trained(pipeline_run[0], tmp_path / "run")
    done = run_cli("quality", "--run", root, "--sample-users", 300, "--seed", 7, "--baselines", "popularity", "ease",
                   "--ease-max-gib", 0.001)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((root / "metrics" / "quality.json").read_text())
    users = report["sample"]["of_users"]  # the test split's users (942 of ml-100k's 943 have test rows here)
    assert f"a sample of 300 of {users} test users" in done.stdout and "skipped: EASE needs" in done.stdout
    assert report["sample"]["users"] == 300 and 900 < users <= 943 and report["sample"]["seed"] == 7
    full = json.loads((pipeline_run[0] / "metrics" / "quality.json").read_text())  # every test user, same model
    for name, m in (("model", report["model"]), ("popularity", report["baselines"]["popularity"])):
        whole = full["model"] if name == "model" else full["baselines"]["popularity"]
        for protocol in ("tutorial", "exclude_seen"):
            lo, hi = m[protocol]["ci95"]["recall@100"]
            assert lo < m[protocol]["recall@100"] < hi and hi - lo < 0.2
            assert lo - 0.02 <= whole[protocol]["recall@100"] <= hi + 0.02, (name, protocol, lo, hi)
    assert "skipped" in report["baselines"]["ease"] and "1,682 x 1,682" in report["baselines"]["ease"]["skipped"]
    # the model over popularity on the sample's users, its paired interval with the sample's correction: it
    # holds the whole split's ratio, and is narrower than the two intervals' ends would allow
    assert set(report["paired"]) == {"popularity"}
    for protocol in ("tutorial", "exclude_seen"):
        paired = report["paired"]["popularity"][protocol]["recall@100"]
        whole = full["paired"]["popularity"][protocol]["recall@100"]["ratio"]
        low, high = paired["ci95"]
        assert low / 1.03 <= whole <= high * 1.03, (protocol, low, whole, high)
        ours, theirs = report["model"][protocol]["ci95"]["recall@100"], report["baselines"]["popularity"][protocol][
            "ci95"]["recall@100"]
        assert high - low < ours[1] / theirs[0] - ours[0] / theirs[1], protocol


def test_large_catalogues_are_scored_in_smaller_user_batches_with_the_same_figures(monkeypatch):
    from scaleout.evaluate import protocols
    from scaleout.evaluate.protocols import Data, evaluate_scores

    rng = np.random.default_rng(4)
    scores = rng.standard_normal((200, 50)).astype(np.float32)
    data = Data(np.array([f"u{i}" for i in range(200)]), np.array([f"m{i}" for i in range(50)]),
                train=Split(rng.integers(0, 200, 800), rng.integers(0, 50, 800)), test=_split(rng, 200, 900, 50))
    sizes = []

    def score(users):
        sizes.append(len(users))
        return scores[users]
    whole = evaluate_scores(score, data)
    assert max(sizes) == len(np.unique(data.test.users[data.test.items >= 0]))  # all in one batch of <= 2,048
    sizes.clear()
    monkeypatch.setattr(protocols, "SCORES_PER_BATCH", 50 * 7)  # 7 users x 50 candidates a block
    assert evaluate_scores(score, data) == whole and max(sizes) == 7


@pytest.mark.slow  # prepares ml-100k's temporal split and trains the default preset on it (about a minute)
def test_a_temporal_splits_new_users_are_counted_and_served_about_as_well_as_by_popularity(ml100k, tmp_path):
    # ml-100k's latest 20% comes mostly from users who joined late, outside the training vocabulary. Their query
    # was the user table's untrained row (recall@100 0.06 against popularity's 0.29 on 2026-12-05); it is now the
    # average training interaction's user, as near popularity as a logQ-corrected model gets (0.28).
    import pyarrow.parquet as pq

    from conftest import run_cli
    from scaleout.data.dataset import Dataset

    root = tmp_path / "run"
    for args in (("prepare", "--run", root, "--source", "movielens", "--path", ml100k, "--split", "temporal"),
                 ("train", "--run", root, "--epochs", 6), ("quality", "--run", root, "--baselines", "popularity")):
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    dataset = Dataset(root / "data")
    test_users = pq.read_table(dataset.files("test"), columns=["user_id"]).column("user_id").to_numpy()
    unknown = int((~np.isin(test_users.astype(str), dataset.vocabulary("user_id"))).sum())
    report = json.loads((root / "metrics" / "quality.json").read_text())
    assert report["test_rows_of_unknown_users"] == unknown and unknown > 0.5 * len(test_users)
    assert f"{unknown:,} of {len(test_users):,} test rows" in done.stdout
    model, popular = report["model"]["exclude_seen"], report["baselines"]["popularity"]["exclude_seen"]
    assert model["recall@100"] > 0.8 * popular["recall@100"] and model["recall@10"] > 0.6 * popular["recall@10"]
