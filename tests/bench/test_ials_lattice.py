"""ials_lattice.py: iALS's lattice scored whole on the validation cut, and where the report's climb stops on it."""

import json
import subprocess
import sys

import pytest

from benchscripts import BENCHMARKS, load


@pytest.mark.slow  # about 15 iALS fits on ml-100k (0.5 s each) and the report's own choice beside them
def test_the_lattice_is_scored_whole_and_the_report_stops_where_its_climb_does(ml100k, tmp_path):
    import scaleout.evaluate.baselines as bl
    from scaleout.data.prepare import prepare
    from scaleout.evaluate.protocols import load as load_data

    out, plot = tmp_path / "results", tmp_path / "reports"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "ials_lattice.py"), "--movielens", str(ml100k),
                          "--alpha-steps", "-1", "1", "--ratio-steps", "-1", "1", "--out", str(out), "--plot",
                          str(plot)], capture_output=True, text=True, timeout=900, cwd=BENCHMARKS)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "ials_lattice_ml-100k.json").read_text())
    assert (plot / "ials_lattice_ml-100k.png").stat().st_size > 10_000
    lattice = {tuple(p["step"]): p for p in result["lattice"]}
    block = {(a, r) for a in (-1, 0, 1) for r in (-1, 0, 1)}
    assert block <= set(lattice)  # the block, and any point a climb asked for beyond it
    for step, p in lattice.items():
        assert {k: p[k] for k in ("factors", "alpha", "regularization")} == bl.ials_setting(step)
    recall = {step: p["recall@10"] for step, p in lattice.items()}
    assert result["best"]["recall@10"] == max(recall.values()) and len(set(recall.values())) > 5
    climbs = result["climbs"]
    assert [tuple(map(tuple, c["moves"])) for c in climbs.values()] == [
        ((-1, 0), (1, 0), (0, -1), (0, 1)), bl.CLIMB_MOVES]
    for label, c in climbs.items():
        stop = tuple(c["stop"])
        # on ml-100k each climb ends by itself, short of the cap on fits, where no point it can move to is better
        assert c["recall@10"] == recall[stop] and c["fits"] == len(c["points"]) < bl.IALS_MAX_FITS, label
        assert {tuple(p) for p in c["points"]} <= set(lattice) and [0, 0] in c["points"], label
        for move in c["moves"]:
            assert recall.get((stop[0] + move[0], stop[1] + move[1]), -1) <= recall[stop], (label, move)
    assert "climb with the report's moves: stops at" in run.stdout and "alpha \\ L2/alpha" in run.stdout
    # The quality report's iALS is the climb's stop on this lattice: the same cut, fits and scores
    data_config = load("quality_preset").source_config(str(ml100k), 0, 0, 0)
    data = load_data(prepare(data_config, tmp_path / "data"))
    chosen = bl.baselines(data, ("ials",))["ials"]
    assert chosen["setting"] == climbs["the report's moves"]["setting"]
    assert {tuple(t[k] for k in ("alpha", "regularization")): t["validation_recall@10"] for t in chosen["tried"]} == {
        (lattice[tuple(p)]["alpha"], lattice[tuple(p)]["regularization"]): recall[tuple(p)]
        for p in climbs["the report's moves"]["points"]}
