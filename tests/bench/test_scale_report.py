"""benchmarks/scale.py: slopes and the report from its figures, and one real pipeline run at a tiny size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchscripts import load

REPO = Path(__file__).resolve().parents[2]


def scale_module():
    return load("scale")


def figures(n, seconds):
    stages = {name: {"seconds": s, "peak_rss_gib": 1.0 + n / 1e8, "rss_at_start_gib": 1.0}
              for name, s in seconds.items()}
    return {"shape": {"interactions": n, "users": n // 144, "items": 26_744}, "stages": stages,
            "counts": {"train": n * 4 // 5, "test": n // 5}, "seconds": sum(seconds.values()), "peak_rss_gib": 2.0,
            "epochs": [{"epoch": 1, "examples_per_s": 90_000.0, "seconds": 1.0}],
            "model_recall": {"recall@10": 0.4, "recall@100": 0.6}}


def test_slopes_are_fitted_from_5m_up_and_a_superlinear_stage_is_flagged(tmp_path):
    scale = scale_module()
    sizes = [1_000_000, 5_000_000, 20_000_000]
    results = {"machine": {"cpu": "test", "cores": 2, "memory_gib": 24}, "epochs": 1, "baselines": ["popularity"],
               "shape_rule": "test", "sizes": {}}
    for n in sizes:
        # train linear from 5M (its 1M point off the line must not count), quality quadratic
        results["sizes"][scale.label(n)] = figures(n, {"train": 50.0 if n == 1_000_000 else n / 1e5,
                                                       "quality": (n / 1e6) ** 2})
    path = scale.write_report(results, tmp_path / "report")
    assert results["slopes"]["train"] == pytest.approx(1.0)
    assert results["slopes"]["quality"] == pytest.approx(2.0)
    text = path.read_text()
    assert "| quality | 1.0 | 25.0 | 400.0 | 2.00 (above 1.15) |" in text
    assert "| train | 50.0 | 50.0 | 200.0 | 1.00 |" in text
    assert (tmp_path / "report" / "stages.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "examples_per_s.png").stat().st_size > 5_000
    assert scale.parse_size("20M") == 20_000_000 and scale.parse_size("50K") == 50_000
    assert scale.shape(100_000_000) == {"interactions": 100_000_000, "users": 10_000_000, "items": 1_000_000}
    assert scale.shape(20_000_263)["users"] == 138_493
    # a stage measured again alone (--prepare-only) is marked, by size and date
    for n in sizes[1:]:
        results["sizes"][scale.label(n)]["stages"]["train"]["measured_alone"] = "2026-11-30"
    assert ("- train at 5M, 20M: measured alone on 2026-11-30 (`scale.py --prepare-only`"
            in scale.write_report(results, tmp_path / "report").read_text())
    # --repeats: the median of a size's runs, the highest peak, every run kept and listed
    runs = [{"seconds": s, "peak_rss_gib": p, "measured_alone": "2026-12-01"} for s, p in ((9.0, 1.0), (7.0, 3.0),
                                                                                          (8.0, 2.0))]
    assert scale.median_run(runs[:1]) == runs[0]
    median = scale.median_run(runs)
    assert median["seconds"] == 8.0 and median["peak_rss_gib"] == 3.0 and median["runs_seconds"] == [9.0, 7.0, 8.0]
    results["sizes"]["5M"]["stages"]["train"] = median
    text = scale.write_report(results, tmp_path / "report").read_text()
    assert "| train | 50.0 | 8.0 | 200.0 |" in text
    assert "the median in the table: train at 5M: 9.0, 7.0, 8.0 s." in text


@pytest.mark.slow
def test_one_tiny_size_runs_the_real_pipeline_and_reports_every_stage(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--sizes", "30K",
                          "--work", str(tmp_path / "work"), "--results", str(tmp_path / "scale.json"),
                          "--report", str(tmp_path / "report"), "--sample-users", "50", "--ray-workers", "2"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    results = json.loads((tmp_path / "scale.json").read_text())
    run = results["sizes"]["30K"]
    assert set(run["stages"]) == {"prepare", "train", "evaluate", "embed_and_index", "through_index", "export",
                                  "quality"}
    assert run["counts"]["train"] + run["counts"]["test"] == 30_000
    assert run["peak_rss_gib"] >= max(s["peak_rss_gib"] for s in run["stages"].values()) - 0.01
    assert run["epochs"][0]["examples_per_s"] > 0
    assert not (tmp_path / "work" / "run-30K").exists()  # removed unless --keep
    report = (tmp_path / "report" / "README.md").read_text()
    assert "| quality |" in report and "## Ray training: each worker's memory" in report
    assert run["sample_users"] == 50 and run["evaluated_rows"]["evaluate"] == run["counts"]["test"]
    assert 0 < run["evaluated_rows"]["through_index"] == run["evaluated_rows"]["quality"] < run["counts"]["test"]
    ray = run["ray"]
    assert ray["workers"] == 2 and len(ray["worker_peak_rss_gib"]) == 2  # both workers' processes were found
    assert all(0.2 < v < 8 for v in ray["worker_peak_rss_gib"]) and ray["epochs"][0]["examples_per_s"] > 0
    # prepare alone again: only that stage's figures change, marked in the report; an unmeasured size is refused
    common = ["--work", str(tmp_path / "work"), "--results", str(tmp_path / "scale.json"), "--report",
              str(tmp_path / "report"), "--prepare-only"]
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--sizes", "30K", "--repeats", "3",
                          *common], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    again = json.loads((tmp_path / "scale.json").read_text())["sizes"]["30K"]
    prepared = again["stages"]["prepare"]
    assert len(prepared["runs_seconds"]) == 3 and prepared["seconds"] == sorted(prepared["runs_seconds"])[1] > 0
    assert prepared["measured_alone"] and out.stdout.count("30K (round ") == 3
    assert {k: v for k, v in again["stages"].items() if k != "prepare"} == \
        {k: v for k, v in run["stages"].items() if k != "prepare"}
    report = (tmp_path / "report" / "README.md").read_text()
    assert "- prepare at 30K: measured alone on" in report and "the median in the table: prepare at 30K: " in report
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--sizes", "40K", *common],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "has no 40K (has 30K)" in out.stderr
