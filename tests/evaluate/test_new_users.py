"""Held-out users for benchmarks/held_out_users.py: who is held out, what each gives and should get back,
the baselines' lists without the given items, and the recall, on data small enough to count by hand."""

import numpy as np
import pytest

from scaleout.errors import ConfigError
from scaleout.evaluate.new_users import HeldOutUser, hold_out, held_out_users, recall, top_k_excluding


def test_hold_out_draws_distinct_users_by_seed_and_refuses_an_empty_side():
    users = np.array(["a", "b", "c", "d", "a", "b", "e", "f", "g", "h"])
    held = hold_out(users, 0.25, seed=3)
    assert len(held) == 2 and len(set(held)) == 2 and set(held) <= set(users)
    assert list(held) == list(hold_out(users, 0.25, seed=3))
    assert any(list(hold_out(users, 0.25, seed=s)) != list(held) for s in range(4, 20))
    with pytest.raises(ConfigError, match="leaves 0 held out"):
        hold_out(users, 0.01, seed=0)
    with pytest.raises(ConfigError, match="one kept"):
        hold_out(users, 1.0, seed=0)


def test_held_out_users_give_their_first_candidate_items_and_keep_the_later_ones():
    #                 u1: 5 events out of time order, one of them not a candidate, one repeated
    users = np.array(["u1", "u1", "u1", "u1", "u1", "u2", "u2", "u3", "u3", "u3"])
    items = np.array(["c", "a", "x", "b", "a", "a", "b", "a", "b", "c"])
    times = np.array([30, 10, 5, 20, 40, 1, 2, 1, 2, 3])
    got, dropped = held_out_users(users, items, times, np.array(["u1", "u2"]), {"a", "b", "c"}, given=2)
    # u1: x (not a candidate) passed over, a given once; u2 has nothing after its 2 given items; u3 is kept.
    assert got == [HeldOutUser("u1", ("a", "b"), frozenset({"c"}))]
    assert dropped == 1


def test_top_k_leaves_out_the_given_items_and_breaks_ties_by_position():
    ids = np.array(["a", "b", "c", "d", "e"])
    scores = np.array([5.0, 9.0, 5.0, 1.0, 7.0])
    assert top_k_excluding(scores, ids, {"b"}, 3) == ["e", "a", "c"]
    assert top_k_excluding(scores, ids, {"b", "e", "a"}, 3) == ["c", "d"]


def test_recall_is_each_users_share_of_later_items_averaged_over_users():
    users = [HeldOutUser("1", ("g",), frozenset({"a", "b"})), HeldOutUser("2", ("g",), frozenset({"c", "d", "e",
                                                                                                   "f"}))]
    lists = [["a", "x", "b"], ["x", "y", "c"]]
    got = recall(lists, users, ks=(1, 3))
    assert got["recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert got["recall@3"] == pytest.approx((1.0 + 0.25) / 2)
    assert got["ci95"]["recall@3"] == pytest.approx(1.96 * np.std([1.0, 0.25], ddof=1) / np.sqrt(2))
    with pytest.raises(ValueError, match="1 lists of recommendations for 2 users"):
        recall(lists[:1], users, ks=(1,))


def test_given_rows_hold_each_users_given_items():
    from scaleout.evaluate.new_users import given_rows

    rows = given_rows([[0, 2], [3], [1, 0, 3]], 4)
    assert rows.shape == (3, 4) and rows.dtype == np.float32
    assert rows.toarray().tolist() == [[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 1]]
    # a user who gives nothing is a row of zeros; no users at all, no rows
    assert given_rows([[], [2]], 3).toarray().tolist() == [[0, 0, 0], [0, 0, 1]]
    assert given_rows([], 3).shape == (0, 3)


def _two_tastes(seed=0):
    """40 users x 20 items: users 0-19 take items 0-9, users 20-39 items 10-19 (6 of the 10 each, drawn)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(40):
        group = 0 if u < 20 else 10
        for i in rng.choice(10, 6, replace=False):
            users.append(u)
            items.append(group + i)
    return sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(40, 20))


def test_baselines_fold_in_a_new_user_as_they_score_a_user_they_were_fitted_on():
    import scaleout.evaluate.baselines as bl
    from scaleout.evaluate.new_users import ease_folded_in, given_rows, ials_folded_in

    train = _two_tastes()
    theirs = [list(train[u].indices) for u in (3, 25)]
    # EASE: a new user with a training user's items gets that user's scores exactly
    weights = bl.ease(train, 10.0)
    assert np.allclose(ease_folded_in(weights, given_rows(theirs, 20)), train[[3, 25]].toarray() @ weights)
    # iALS: the user's factors solved from their items against the item factors are the fit's own last solve of
    # them, up to the item factors' last move (15 sweeps: converged)
    model = bl.ials_fit(train, {"factors": 2, "alpha": 3.0, "regularization": 1.0})  # two tastes: rank 2
    folded = ials_folded_in(model, given_rows(theirs, 20))
    fitted = np.asarray(model.user_factors)[[3, 25]] @ np.asarray(model.item_factors).T
    assert folded.shape == (2, 20)
    assert np.abs(folded - fitted).max() < 0.02 * np.abs(fitted).max()
    # a new user giving 3 items of the second taste gets that taste's other items first, from either baseline
    for scores in (ease_folded_in(weights, given_rows([[10, 11, 12]], 20))[0],
                   ials_folded_in(model, given_rows([[10, 11, 12]], 20))[0]):
        top = top_k_excluding(scores, np.arange(20).astype(str), {"10", "11", "12"}, 7)
        assert sorted(top) == [str(i) for i in range(13, 20)], top
