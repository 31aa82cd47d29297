"""Bad input through the `scaleout` command: one-line error, non-zero exit, nothing written."""

import pytest

from conftest import run_cli


def test_unknown_source_is_refused_by_the_parser(tmp_path):
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "netflix")
    assert result.returncode == 2 and "invalid choice: 'netflix'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id\nu1,i1\nu2\n", "events.csv, line 3: expected 2 fields separated by ',', found 1"),
    ("user_id,item_id,rating\nu1,i1,5\nu2,i2,five\n", "events.csv, line 3: field 'rating' is 'five'; expected a number"),
    ("uid,item_id\nu1,i1\n", "missing column(s) ['user_id']"),
])
def test_malformed_input_exits_non_zero_and_writes_nothing(tmp_path, content, message):
    (tmp_path / "events.csv").write_text(content)
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "generic", "--path", tmp_path / "events.csv")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    run = tmp_path / "run"
    assert not run.exists() or list(run.iterdir()) == []  # no dataset, no temporary leftovers


def test_missing_directory_and_missing_stages_are_explained(tmp_path):
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "movielens", "--path", tmp_path / "nowhere")
    assert result.returncode == 1 and "nowhere: no such file or directory" in result.stderr
    result = run_cli("train", "--run", tmp_path / "run", "--epochs", "1")
    assert result.returncode == 1 and "not a prepared dataset" in result.stderr and "scaleout prepare" in result.stderr


def test_out_of_range_settings_are_refused(tmp_path):
    result = run_cli("prepare", "--run", tmp_path / "run", "--source", "synthetic", "--test-fraction", "1.5")
    assert result.returncode == 1 and "test_fraction must be in (0, 1)" in result.stderr
