"""The main job end to end on MovieLens 100K with the default (quality) preset, through the
`scaleout` command, and its SavedModel reloaded in a fresh process."""

import json
import subprocess
import sys

import pytest

from conftest import run_cli
from runs import read_scalars

FRESH_PROCESS_QUERY = """
import sys, json
import tensorflow as tf  # TensorFlow alone: serving needs neither scaleout nor TFRS
serve = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
out = serve(user_id=tf.constant(["42"]))
print(json.dumps({"titles": [t.decode() for t in out["movie_title"].numpy()[0]],
                  "shape": out["scores"].shape.as_list(),
                  "signature_k": serve.structured_outputs["scores"].shape.as_list()[1]}))
"""


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run


def top3(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    return [line.split(". ", 1)[1].rsplit("  (movie_id", 1)[0] for line in lines]


def test_the_pipeline_trains_the_quality_preset_and_reports_it_beside_the_baselines(run):
    from scaleout.train.presets import configs

    root, summary, log = run
    assert summary["counts"]["train"] == 80_000 and summary["counts"]["test"] == 20_000
    assert summary["counts"]["train_users"] == 943 and summary["counts"]["candidates"] == 1682
    evaluation = json.loads((root / "metrics" / "eval.json").read_text())
    top100 = evaluation["metrics"]["factorized_top_k/top_100_categorical_accuracy"]
    assert summary["metrics"]["factorized_top_k/top_100_categorical_accuracy"] == top100
    epochs = configs("quality")[1].epochs
    train = json.loads((root / "metrics" / "train.json").read_text())
    assert [e["epoch"] for e in train["epochs"]] == list(range(1, epochs + 1))
    assert train["epochs"][-1]["loss_per_example"] < train["epochs"][0]["loss_per_example"]
    assert f"epoch {epochs}/{epochs}" in log and "preset quality" in log
    assert len(summary["recommendations"]["brute_force"]) == 3
    # The quality report: the model beside popularity, EASE and iALS on the same split, both protocols.
    quality = summary["quality"]
    assert set(quality) == {"model", "popularity", "ease", "ials"}
    model, popularity = quality["model"], quality["popularity"]
    assert model["tutorial"]["recall@100"] == pytest.approx(top100, abs=2e-3)
    # It learned more than popularity under both protocols (the tutorial's model is below popularity);
    # the figures themselves are measured by benchmarks/quality_preset.py, not asserted here.
    assert model["tutorial"]["recall@100"] > popularity["tutorial"]["recall@100"] + 0.05
    assert model["exclude_seen"]["recall@10"] > popularity["exclude_seen"]["recall@10"] + 0.05
    assert "ease" in log and "exclude_seen" in log  # the table is printed
    # iALS is tuned, not a straw man: its weights climbed to on the validation cut put it beside EASE (the grid
    # before 2026-12-05 left it 0.017 below: 0.1588 against 0.1754)
    ials, ease = quality["ials"], quality["ease"]
    assert ials["exclude_seen"]["recall@10"] > ease["exclude_seen"]["recall@10"] - 0.01
    chosen = json.loads((root / "metrics" / "quality.json").read_text())["baselines"]
    setting = chosen["ials"]["setting"]
    assert setting["factors"] == 128 and setting["regularization"] > 1 and setting["alpha"] > 1
    # each setting tried is in quality.json with its validation score, the chosen one the best; the table says it
    for name in ("ease", "ials"):
        tried, setting = chosen[name]["tried"], chosen[name]["setting"]
        best = max(tried, key=lambda t: t["validation_recall@10"])
        assert {key: best[key] for key in setting} == setting and len(tried) > 3, name
        assert chosen[name]["chosen_on"]["users"] == chosen[name]["chosen_on"]["of_users"] > 900  # ranked whole
    assert log.count("chosen: ") >= 2 and "chosen: factors 128, alpha" in log
    # the model over each baseline on the same test users, with its interval paired over them (the per-user sums
    # it is computed from are not kept in the file)
    report = json.loads((root / "metrics" / "quality.json").read_text())
    assert set(report["paired"]) == {"popularity", "ease", "ials"} and "per_user" not in report["model"]
    for name, protocols in report["paired"].items():
        assert "per_user" not in report["baselines"][name] and set(protocols) == {"tutorial", "exclude_seen"}
        for protocol, metrics in protocols.items():
            for metric, paired in metrics.items():
                ours, theirs = report["model"][protocol][metric], report["baselines"][name][protocol][metric]
                assert paired["ratio"] == pytest.approx(ours / theirs, rel=1e-9), (name, protocol, metric)
                low, high = paired["ci95"]
                assert low < paired["ratio"] < high and high / low < 1.3, (name, protocol, metric)
    assert "model / baseline on the same test users, 95% interval paired over the users" in log
    best = max(report["baselines"], key=lambda name: report["baselines"][name]["exclude_seen"]["recall@10"])
    assert f"best baseline {best}: " in log and f"(model / {best}, paired 95%: recall@10 " in log


def test_every_stage_reports_its_time_and_memory_and_training_writes_tensorboard_scalars(run):
    from scaleout.train.presets import configs

    root, summary, log = run
    stages = summary["stages"]
    order = ["prepare", "train", "evaluate", "embed_and_index", "through_index", "export", "quality"]
    assert set(stages) == set(order)  # the printed summary's keys are sorted; the log keeps the order
    assert [log.index(f"stage {name} done in") for name in order] == sorted(log.index(f"stage {name} done in")
                                                                              for name in order)
    for name, figures in stages.items():
        assert figures["seconds"] > 0 and figures["peak_rss_gib"] >= figures["rss_at_start_gib"] > 0.01, name
    # the stages' seconds are rounded to 0.01 and the total to 0.1: their sum may pass it by the rounding alone
    assert sum(f["seconds"] for f in stages.values()) <= summary["seconds"] + 0.05 + 0.005 * len(stages)
    scalars = read_scalars(root / "metrics" / "tensorboard" / "train")
    assert sorted(scalars["loss_per_example"]) == list(range(1, configs("quality")[1].epochs + 1))


def test_recommend_and_the_saved_model_in_a_fresh_process_agree(run):
    root, summary, _ = run
    rec = run_cli("recommend", "--run", root, "--user", "42", "-k", "3")
    assert rec.returncode == 0, rec.stderr
    titles = top3(rec.stdout)
    assert titles == summary["recommendations"]["brute_force"]
    fresh = subprocess.run([sys.executable, "-c", FRESH_PROCESS_QUERY, str(root / "export" / "brute_force")],
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    served = json.loads(fresh.stdout)
    assert served["titles"][:3] == titles
    assert served["shape"] == [1, 10] and served["signature_k"] == 10
    via_cli = run_cli("recommend", "--saved-model", root / "export" / "brute_force", "--user", "42", "-k", "3")
    assert via_cli.returncode == 0 and top3(via_cli.stdout) == titles


def test_unknown_user_gets_a_warning_not_a_crash(run):
    from scaleout.train.unknown_user import UNKNOWN_USER

    root, _, _ = run
    rec = run_cli("recommend", "--run", root, "--user", "no-such-user", "-k", "2")
    assert rec.returncode == 0, rec.stderr
    assert "not in the training vocabulary" in rec.stderr
    assert UNKNOWN_USER in rec.stderr  # what model.json says the row holds
    assert len(top3(rec.stdout)) == 2


def test_evaluate_reloads_the_saved_towers_and_gets_the_same_metrics(run):
    root, summary, _ = run
    result = run_cli("evaluate", "--run", root)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    for k in (1, 5, 10, 50, 100):
        name = f"factorized_top_k/top_{k}_categorical_accuracy"
        assert metrics[name] == pytest.approx(summary["metrics"][name], abs=1e-6)


@pytest.mark.slow
def test_a_pipeline_can_skip_stages_and_evaluate_a_sample_of_users(tmp_path):
    from conftest import SMALL_RUN
    from scaleout.config import PipelineConfig
    from scaleout.errors import ConfigError

    root = tmp_path / "run"
    result = run_cli("pipeline", "--run", root, *SMALL_RUN, "--epochs", 1, "--batch-size", 512, "--exclude-seen",
                     "--baselines", "popularity", "--sample-users", 40, "--sample-seed", 3,
                     "--skip", "evaluate", "export")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["skipped"] == ["evaluate", "export"] and "skipped: evaluate, export" in result.stderr
    assert set(summary["stages"]) == {"prepare", "train", "embed_and_index", "through_index", "quality"}
    assert summary["metrics"] is None and summary["exports"] is None and summary["recommendations"] is None
    assert not (root / "metrics" / "eval.json").exists() and not (root / "export").exists()
    quality = json.loads((root / "metrics" / "quality.json").read_text())
    through = json.loads((root / "metrics" / "index_eval.json").read_text())
    assert quality["sample"]["users"] == through["sample"]["users"] == 40
    assert quality["sample"]["rows"] == through["sample"]["rows"] == through["test_examples"] < through["sample"]["of_rows"]
    assert summary["through_index"]["sample"] == through["sample"]
    assert "ci95" in quality["model"]["exclude_seen"] and "ci95" in through["scann"]
    # the same draw: through the exact index, each sampled row's top-k is the quality report's, tutorial protocol
    assert through["brute_force"]["factorized_top_k/top_10_categorical_accuracy"] == pytest.approx(
        quality["model"]["tutorial"]["recall@10"], abs=1e-6)
    no_indexes = run_cli("evaluate", "--run", root, "--sample-users", 10)
    assert no_indexes.returncode == 1 and "add --indexes" in no_indexes.stderr
    with pytest.raises(ConfigError, match="cannot skip stage.*'train'.*evaluate, through_index, export, quality"):
        PipelineConfig(skip=("train",))
