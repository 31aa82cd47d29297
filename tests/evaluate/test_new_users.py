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
