"""Each stage's own time and peak memory, and the progress lines of long stages."""

import logging

import numpy as np

from scaleout.stages import Stages, peak_rss_bytes, reset_peak_rss


def test_a_stage_reports_its_own_peak_not_an_earlier_stages(caplog):
    assert reset_peak_rss(), "Linux lets a process reset its high-water mark"
    stages = Stages()
    with caplog.at_level(logging.INFO, logger="scaleout.stages"):
        with stages("big"):
            block = np.ones(400 << 20, np.uint8)  # 400 MiB, touched
            del block
        with stages("small"):
            np.ones(1 << 20, np.uint8)
    big, small = stages.figures["big"], stages.figures["small"]
    assert big["peak_rss_gib"] - big["rss_at_start_gib"] >= 0.38
    assert small["peak_rss_gib"] - small["rss_at_start_gib"] < 0.1  # reset: the big stage's peak is not in it
    assert big["peak_of_stage"] and small["seconds"] >= 0
    assert "stage big done in" in caplog.text and "stage small done in" in caplog.text
    assert peak_rss_bytes() > 0


def test_a_stage_s_peak_is_never_below_what_it_started_with(monkeypatch):
    """The kernel's high-water mark and resident size come from per-thread counters summed now and then: the
    mark read at a stage's end can fall a few MB under the size read at its start (seen in CI: export, 1.311
    against 1.312 GiB). The stage's figure is at least its start."""
    from scaleout import stages as stages_module

    monkeypatch.setattr(stages_module, "peak_rss_bytes", lambda: 1 << 20)  # a mark far under the process's size
    stages = Stages()
    with stages("low mark"):
        pass
    figures = stages.figures["low mark"]
    assert figures["rss_at_start_gib"] > 2**-10
    assert figures["peak_rss_gib"] == figures["rss_at_start_gib"]


def test_long_epochs_and_evaluations_log_their_progress(monkeypatch, caplog):
    from scaleout import stages
    from scaleout.train.callbacks import EpochLog, EvaluationLog

    monkeypatch.setattr(stages, "PROGRESS_SECONDS", 0.0)
    epoch = EpochLog(5000, 2, batch_size=1024)
    evaluation = EvaluationLog(3000, 1024)
    with caplog.at_level(logging.INFO, logger="scaleout.train.callbacks"):
        epoch.on_epoch_begin(0)
        epoch.on_train_batch_end(1, {"loss_sum": 3.0})
        epoch.on_train_batch_end(4, {"loss_sum": 6.0})
        evaluation.on_test_begin()
        evaluation.on_test_batch_end(2)
    assert "epoch 1/2: 2,048 of 5,000 examples" in caplog.text
    assert "epoch 1/2: 5,000 of 5,000 examples" in caplog.text  # the last, short batch is not overcounted
    assert "evaluate: 3,000 of 3,000 test examples" in caplog.text


def test_ranking_logs_its_progress(monkeypatch, caplog):
    from scaleout import stages
    from scaleout.evaluate.protocols import Split, rank_protocols

    monkeypatch.setattr(stages, "PROGRESS_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 8)).astype(np.float32)
    test = Split(users=np.arange(50), items=rng.integers(0, 8, 50))
    with caplog.at_level(logging.INFO, logger="scaleout.evaluate.protocols"):
        rank_protocols(lambda u: scores[u], test, {"tutorial": None}, batch=20, label="quality, test")
    assert "quality, test: 20 of 50 test rows ranked" in caplog.text
    assert "quality, test: 40 of 50 test rows ranked" in caplog.text


def test_ranking_with_tied_scores_logs_the_rows_it_has_ranked(monkeypatch, caplog):
    """Tied scores share NDCG's places; the bounds of those places once took the name of the batch's last row,
    so the progress line after such a batch was handed an array, which raised (seen at 20M interactions, where
    ranking takes longer than the progress interval)."""
    from scaleout import stages
    from scaleout.evaluate.protocols import Split, rank_protocols

    monkeypatch.setattr(stages, "PROGRESS_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (50, 8)).astype(np.float32)  # ties everywhere
    test = Split(users=np.arange(50), items=rng.integers(0, 8, 50))
    with caplog.at_level(logging.INFO, logger="scaleout.evaluate.protocols"):
        out = rank_protocols(lambda u: scores[u], test, {"tutorial": None}, ks=(1,), ndcg_ks=(2,), batch=20,
                             label="quality, test")
    assert "quality, test: 20 of 50 test rows ranked" in caplog.text
    assert "quality, test: 50 of 50 test rows ranked" in caplog.text
    assert 0.0 < out["tutorial"]["ndcg@2"] < 1.0


def test_progress_stays_quiet_until_its_interval_has_passed_and_never_counts_past_the_total(monkeypatch, caplog):
    from scaleout import stages
    from scaleout.stages import Progress

    logger = logging.getLogger("scaleout.test_progress")
    monkeypatch.setattr(stages, "PROGRESS_SECONDS", 30.0)  # as in use (the tests' own default is 0)
    with caplog.at_level(logging.INFO, logger=logger.name):
        quiet = Progress(logger, "short loop", 10, "rows")
        for done in range(1, 11):
            quiet(done)
        assert "short loop" not in caplog.text  # 30 s have not passed
        monkeypatch.setattr(stages, "PROGRESS_SECONDS", 0.0)
        loud = Progress(logger, "through the indexes", 100, "test rows", "rows/s")
        loud(40)
        loud(120)  # a last batch counted whole
    assert "through the indexes: 40 of 100 test rows, " in caplog.text
    assert "through the indexes: 100 of 100 test rows, " in caplog.text and "rows/s" in caplog.text
    counted = [record.getMessage().split(": ", 1)[1].split(" test rows")[0] for record in caplog.records
               if record.getMessage().startswith("through the indexes: ")]
    assert counted == ["40 of 100", "100 of 100"]  # never "120 of 100" (the rate that follows may hold any digits)
