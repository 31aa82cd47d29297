"""quality_cuts.py's rule with a floor on the tutorial protocol's top-100 (--tutorial-floor; issue 16's 0.40)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from benchscripts import BENCHMARKS, load

BASE = {"recall@10": 0.1, "recall@100": 0.5}


@pytest.fixture(scope="module")
def cuts():
    return load("quality_cuts")


def point(epoch, r10, r100, tutorial=None):
    p = {"epoch": epoch, "recall@10": r10, "recall@100": r100}
    return p if tutorial is None else {**p, "tutorial@100": tutorial}


def test_the_floor_keeps_the_best_recall_among_the_epochs_that_hold_it(cuts):
    # Two cuts; the mean tutorial top-100 falls as recall@10 rises (epochs 1-3: 0.42, 0.40, 0.38).
    cut_a = [point(1, 0.14, 0.60, 0.43), point(2, 0.15, 0.61, 0.41), point(3, 0.16, 0.62, 0.37)]
    cut_b = [point(1, 0.12, 0.58, 0.41), point(2, 0.13, 0.59, 0.39), point(3, 0.14, 0.60, 0.39)]
    result = cuts.averaged([cut_a, cut_b], lambda p: p, BASE, floor=0.4)
    assert [p["tutorial@100"] for p in result["mean_curve"]] == pytest.approx([0.42, 0.40, 0.38])
    assert result["best"]["epoch"] == 3  # unconstrained: the best recall@10
    assert result["best_above_floor"]["epoch"] == 2  # the floor is kept at 0.40 itself, not at 0.38
    assert result["best_above_floor"]["recall@10"] == pytest.approx(0.14)
    assert cuts.averaged([cut_a, cut_b], lambda p: p, BASE, floor=0.43)["best_above_floor"] is None
    assert "best_above_floor" not in cuts.averaged([cut_a, cut_b], lambda p: p, BASE)


def test_curves_without_the_tutorial_protocol_average_what_they_have(cuts):
    # A committed run from before the tutorial protocol was scored (or a prior's curve): no floor can hold.
    curve = [point(1, 0.14, 0.60), point(2, 0.15, 0.61)]
    result = cuts.averaged([curve, curve], lambda p: p, BASE, floor=0.4)
    assert "tutorial@100" not in result["mean_curve"][0] and result["best"]["epoch"] == 2
    assert result["best_above_floor"] is None


def test_the_choice_is_the_best_recall_at_10_over_the_entries_epochs_above_the_floor(cuts):
    entries = [
        {"name": "a", "setting": {"l2": 0.1}, "best_above_floor": point(8, 0.150, 0.609, 0.400)},
        {"name": "c", "setting": {"l2": 0.14}, "best_above_floor": point(20, 0.152, 0.606, 0.410)},
        {"name": "b", "setting": {"l2": 0.12}, "best_above_floor": point(14, 0.152, 0.608, 0.402)},
        {"name": "d", "setting": {"l2": 0.05}, "best_above_floor": None},
    ]
    choice = cuts.choose_above_floor(entries)
    # b and c tie at recall@10; recall@100 breaks it.
    assert (choice["name"], choice["setting"], choice["epoch"]) == ("b", {"l2": 0.12}, 14)
    assert cuts.choose_above_floor(entries[3:]) is None


def test_the_presets_point_is_the_entry_of_its_model_and_batch_under_the_grids_defaults(cuts):
    # The `quality` preset: 128 dims, in-batch, logQ, hits removed, L2 0.1, batch 1,024, 14 epochs.
    preset = {"logq_correction": True, "remove_accidental_hits": True, "l2": 0.1, "embedding_dim": 128}
    curve = [point(e, 0.1 + e / 1000, 0.6, 0.4 - e / 1000) for e in range(1, 25)]
    entries = [{"name": "batch 2048", "setting": {**preset, "batch_size": 2048, "epochs": 24}, "mean_curve": curve},
               {"name": "L2 0.12", "setting": {**preset, "l2": 0.12, "epochs": 24}, "mean_curve": curve},
               {"name": "the preset", "setting": {**preset, "epochs": 24}, "mean_curve": curve}]
    found = cuts.preset_point(entries, {"batch_size": 1024, "epochs": 30})
    assert found == {"name": "the preset", **point(14, 0.114, 0.6, 0.386)}
    # Under a grid whose default batch is another, the entry without a batch of its own is not the preset's.
    assert cuts.preset_point(entries, {"batch_size": 512, "epochs": 30}) is None
    # An entry trained fewer epochs than the preset's has no point at them.
    assert cuts.preset_point([{**entries[2], "mean_curve": curve[:10]}], {"batch_size": 1024}) is None
    # A result written before the defaults were recorded ran under the grid's.
    assert cuts.grid_defaults({"entries": []})["batch_size"] == 1024
    assert cuts.grid_defaults({"defaults": {"batch_size": 512}}) == {"batch_size": 512}


@pytest.mark.slow  # trains a small model on two validation cuts of ml-100k, 3 epochs each
def test_the_script_scores_both_protocols_each_epoch_and_chooses_above_the_floor(ml100k, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("defaults: {batch_size: 1024, epochs: 3}\n"
                    "entries:\n"
                    "  small: {logq_correction: true, remove_accidental_hits: true, l2: 0.1, embedding_dim: 16}\n"
                    "  other: {embedding_dim: 8}\n")
    out, figure = tmp_path / "cuts.json", tmp_path / "cuts.png"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "quality_cuts.py"), "--movielens", str(ml100k),
                          "--grid", str(grid), "--cuts", "2", "--only", "small", "--tutorial-floor", "0.05",
                          "--out", str(out), "--plot", str(figure)],
                         capture_output=True, text=True, timeout=900, cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["cuts"] == 2 and [e["name"] for e in result["entries"]] == ["small"]
    assert result["data"] == f"movielens {ml100k}"
    entry = result["entries"][0]
    curve = entry["mean_curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3]
    for p in curve:
        # Ranking the user's training items too can only push a held-out item down: top-100 no higher.
        assert 0 < p["tutorial@100"] <= p["recall@100"] and 0 < p["recall@10"] <= p["recall@100"] <= 1
    kept = [p for p in curve if p["tutorial@100"] >= 0.05]
    assert entry["best_above_floor"] == max(kept, key=lambda p: (p["recall@10"], p["recall@100"]))
    assert result["choice"] == {"name": "small", "setting": entry["setting"], **entry["best_above_floor"]}
    assert result["tutorial_floor"] == 0.05 and 0 < result["ease"]["mean"]["recall@10"] < 1
    assert result["defaults"] == {"batch_size": 1024, "epochs": 3}
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"
    assert "the choice (best recall@10 of the epochs keeping tutorial top-100 >= 0.05): small, epoch" in run.stdout


def raw_pairs(data, split):
    return sorted(zip(data.user_ids[split.users], data.item_ids[split.items]))


def test_cuts_of_a_prepared_dataset_of_ones_own_come_from_its_training_split_alone(tmp_path):
    from scaleout.config import DataConfig
    from scaleout.data.prepare import prepare
    from scaleout.evaluate.protocols import load as load_data

    own = prepare(DataConfig(source="synthetic", synthetic_interactions=4000, synthetic_users=200,
                             synthetic_items=150, seed=3), tmp_path / "own")
    whole = load_data(own)
    cuts = load("quality_search").validation_cuts(None, tmp_path / "work", [0, 1], prepared=str(tmp_path / "own"))
    assert len(cuts) == 2 and not (tmp_path / "work" / "data").exists()  # nothing of MovieLens prepared
    heldout = []
    for _, data in cuts:
        assert (data.train.users >= 0).all() and (data.train.items >= 0).all()
        # every row of a cut is one of the training split's, and the cut holds all of them: the test never read
        assert sorted(raw_pairs(data, data.train) + raw_pairs(data, data.test)) == raw_pairs(whole, whole.train)
        assert 0.05 < len(data.test.users) / len(whole.train.users) < 0.15
        heldout.append(raw_pairs(data, data.test))
    assert heldout[0] != heldout[1]  # each seed its own cut


def test_a_catalogue_too_large_for_ease_is_refused_naming_its_size(monkeypatch):
    import scipy.sparse as sp

    import scaleout.evaluate.baselines as baselines

    seen = sp.csr_matrix(np.eye(3000, dtype=np.float32))
    monkeypatch.setattr(baselines, "memory_limit", lambda max_gib=0.0: 2**20)  # a machine allowing 1 MiB
    with pytest.raises(SystemExit, match=r"catalogue of 3,000 items needs about 0\.2 GiB .* more than the 0\.0 GiB"):
        load("quality_cuts").ease_weights(seen)
    monkeypatch.setattr(baselines, "memory_limit", lambda max_gib=0.0: 2**30)
    assert load("quality_cuts").ease_weights(seen).shape == (3000, 3000)
