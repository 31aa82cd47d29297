"""The ANN benchmark suite: measures by hand, the grid, every index through one interface, the quick suite end to end."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_cli
from scaleout.bench import measure
from scaleout.bench.algorithms import ALGORITHMS, EXACT, NEEDS_TENSORFLOW, make
from scaleout.bench.datasets import exact_top_k, open_dataset, parse_size, perturbed
from scaleout.bench.report import TARGET, load_results, search_row, tune
from scaleout.bench.runner import expand, load_config
from scaleout.config import IndexConfig
from scaleout.errors import ConfigError


def test_recall_counts_rows_scoring_at_least_the_true_kth_score():
    train = np.array([[3.0], [2.0], [1.0], [2.0]], np.float32)
    queries = np.array([[1.0]], np.float32)
    true_scores = np.array([[3.0, 2.0]], np.float32)
    assert measure.recall(train, queries, np.array([[0, 1]]), true_scores, 2) == 1.0
    assert measure.recall(train, queries, np.array([[0, 3]]), true_scores, 2) == 1.0  # a tie counts as found
    assert measure.recall(train, queries, np.array([[2, 0]]), true_scores, 2) == 0.5
    assert measure.recall(train, queries, np.array([[0, -1]]), true_scores, 2) == 0.5  # padding is not found


def test_percentiles_and_throughput():
    p = measure.percentiles(np.array([0.001] * 98 + [0.002, 0.010]))
    assert p["p50_ms"] == pytest.approx(1.0) and p["p99_ms"] > 1.0 and p["queries"] == 100



def test_latencies_run_one_query_outside_the_time_and_the_deadline(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    calls = []

    def search(q, k):  # the first search compiles (100 s), later ones take 1 ms
        calls.append(len(q))
        clock[0] += 100.0 if len(calls) == 1 else 0.001

    lat = measure.latencies(search, np.zeros((50, 2), np.float32), 1, 20, 1.0)
    assert len(calls) == 21 and len(lat) == 20  # the deadline starts after the warm-up: every query is timed
    assert lat.max() == pytest.approx(0.001)


def test_throughput_runs_one_batch_outside_the_time_then_at_least_one_inside(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    calls = []

    def search(q, k):  # the first search of a batch size compiles (100 s), later ones take 2 s
        calls.append(len(q))
        clock[0] += 100.0 if len(calls) == 1 else 2.0

    qps, done = measure.throughput(search, np.zeros((10, 2), np.float32), 1, 64, 0.0)
    assert calls == [64, 64] and done == 64  # padded past the 10 queries
    assert qps == 32.0  # 64 queries in the 2 s of the timed batch: the warm-up is not counted


def test_median_seconds_warms_up_then_takes_the_median_of_each_runs_mean_per_call(monkeypatch):
    clock = iter([0.0, 2.0, 10.0, 14.0, 20.0, 30.0])  # runs of 2 calls: 2 s, 4 s and 10 s
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    calls = []
    assert measure.median_seconds(lambda: calls.append(1), repeats=3, calls=2, warmup=4) == 2.0
    assert len(calls) == 4 + 3 * 2


def test_a_fits_steady_rate_is_the_median_of_its_epochs_after_the_first():
    history = [{"examples_per_second": r} for r in (10.0, 300.0, 100.0, 200.0)]  # the first: tracing
    assert measure.steady_examples_per_second(history) == 200.0
    assert measure.steady_examples_per_second(history[:1]) == 10.0  # one epoch: itself


def test_grid_expands_every_combination_and_refuses_unknown_arguments(tmp_path):
    assert expand([{"M": [16, 32], "ef": 100}]) == [{"M": 16, "ef": 100}, {"M": 32, "ef": 100}]
    assert expand(None) == [{}]
    bad = tmp_path / "grid.yaml"
    bad.write_text("datasets: [synthetic-1K-4]\nalgorithms:\n  faiss_hnsw:\n    build: [{M: 8, efc: 10}]\n")
    with pytest.raises(ConfigError, match=r"grid.yaml: FaissHNSW: unknown build arguments \['efc'\]"):
        load_config(bad)
    bad.write_text("datasets: [synthetic-1K-4]\nalgorithms:\n  hnswlib:\n    query: [{nprobe: 3}]\n")
    with pytest.raises(ConfigError, match=r"hnswlib: unknown query arguments \['nprobe'\]"):
        load_config(bad)
    bad.write_text("datasets: [x]\nalgorithms: {annoy: {}}\n")
    with pytest.raises(ConfigError, match="unknown index 'annoy'"):
        load_config(bad)
    assert parse_size("10M") == 10_000_000 and parse_size("20K") == 20_000
    with pytest.raises(ConfigError, match="size '1G'"):
        parse_size("1G")


@pytest.mark.parametrize("line, message", [
    ("queries: -3", "queries must be a whole number of at least 1, got -3"),
    ("recall_queries: 0", "recall_queries must be a whole number of at least 1, got 0"),
    ("latency_queries: 2.5", "latency_queries must be a whole number of at least 1, got 2.5"),
    ("k: true", "k must be a whole number of at least 1, got True"),
    ("bandwidth_mb: '1024'", "bandwidth_mb must be a whole number of at least 1, got '1024'"),
    ("seconds: 0", "seconds must be a number above 0, got 0"),
    ("ks: []", "ks must list at least one whole number, got none"),
    ("ks: 10", "ks must be a list \\(e.g. \\[10\\]\\), got 10"),
    ("batch_sizes: [1, '64']", "batch_sizes must be a whole number of at least 1, got '64'"),
])
def test_a_grids_counts_and_times_are_checked_before_anything_runs(tmp_path, line, message):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"datasets: [synthetic-1K-4]\n{line}\nalgorithms: {{bruteforce: {{}}}}\n")
    with pytest.raises(ConfigError, match=f"grid.yaml: {message}"):
        load_config(grid)


def test_a_grids_datasets_and_indexes_must_be_a_list_and_a_mapping(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: synthetic-1K-4\nalgorithms: {bruteforce: {}}\n")  # not one name per letter
    with pytest.raises(ConfigError, match="grid.yaml: datasets must be a list \\(e.g. \\[synthetic-1M-32\\]\\), "
                                          "got 'synthetic-1K-4'"):
        load_config(grid)
    grid.write_text("datasets: [synthetic-1K-4]\nalgorithms: [bruteforce]\n")
    with pytest.raises(ConfigError, match="algorithms must map index names to their grids, got \\['bruteforce'\\]"):
        load_config(grid)
    grid.write_text("datasets: [synthetic-1K-4]\nalgorithms: {hnswlib: {max_n: 0}}\n")
    with pytest.raises(ConfigError, match="hnswlib: max_n must be a whole number of at least 1, got 0"):
        load_config(grid)
    for name, message in (("synthetic-20K-0", "dataset 'synthetic-20K-0': dimension '0'; expected a whole number"),
                          ("synthetic-0K-4", "dataset 'synthetic-0K-4': size '0K': expected at least 1"),
                          ("movielens-perturbed-x", "dataset 'movielens-perturbed-x': size 'x': expected a number"),
                          ("synthetic-1M", "unknown dataset 'synthetic-1M'; expected synthetic-<n>-<dim>")):
        # the last dataset of the grid, named before the first one runs
        grid.write_text(f"datasets: [synthetic-1K-4, {name}]\nalgorithms: {{bruteforce: {{}}}}\n")
        with pytest.raises(ConfigError, match=f"grid.yaml: {message}"):
            load_config(grid)
    grid.write_text("datasets: [synthetic-1K-4]\nqueries: 16\nseconds: 0.2\nks: [10]\nalgorithms: {bruteforce: {}}\n")
    cfg = load_config(grid)
    assert (cfg.queries, cfg.seconds, cfg.ks) == (16, 0.2, (10,))


def test_synthetic_dataset_is_seeded_cached_and_exact(tmp_path):
    a = open_dataset("synthetic-2K-8", tmp_path, queries=50)
    b = open_dataset("synthetic-2K-8", tmp_path / "other", queries=50)
    np.testing.assert_array_equal(a.train(), b.train())
    full = a.queries() @ a.train().T
    np.testing.assert_array_equal(a.neighbors()[:, :5], np.argsort(-full, axis=1, kind="stable")[:, :5])
    assert a.meta["n"] == 2000 and a.meta["dim"] == 8 and a.neighbors().shape == (50, 1000)
    # a cache made when 100 exact neighbours were kept is made again, not read short
    meta = json.loads((a.path / "dataset.json").read_text())
    (a.path / "dataset.json").write_text(json.dumps({**meta, "true_k": 100}))
    np.save(a.path / "neighbors.npy", a.neighbors()[:, :100])
    assert open_dataset("synthetic-2K-8", tmp_path, queries=50).neighbors().shape == (50, 1000)
    with pytest.raises(ConfigError, match="unknown dataset 'random-5'"):
        open_dataset("random-5", tmp_path)
    with pytest.raises(ConfigError, match="needs a trained run"):
        open_dataset("movielens", tmp_path)


def test_perturbed_copies_keep_the_originals_and_scale_by_uniform_noise():
    v = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    out = perturbed(v, 8)
    np.testing.assert_array_equal(out[:3], v)
    ratio = out[3:] / np.concatenate([v, v])[:5]
    assert out.shape == (8, 4) and (ratio >= 0).all() and (ratio < 1).all()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_index_finds_the_neighbours_and_saves(name, tmp_path):
    if name in NEEDS_TENSORFLOW:
        import scaleout.tfenv  # noqa: F401  (Keras 2 for the TFRS layers)
    rng = np.random.default_rng(0)
    train = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    rows, scores = exact_top_k(train, queries, 100)
    build = {"scann": {"mode": "tree", "leaves_per_sqrt": 0.5}, "tfrs_scann": {"leaves_per_sqrt": 0.5, "leaves_fraction": 1.0, "reorder_per_k": 30},
             "faiss_ivfpqfs": {"lists_per_sqrt": 0.5}}.get(name, {})
    query = {"scann": {"leaves_fraction": 1.0, "reorder_per_k": 30}, "faiss_hnsw": {"ef_search": 200},
             "hnswlib": {"ef_search": 200}, "faiss_ivfpqfs": {"nprobe_fraction": 1.0, "k_factor": 30}}.get(name, {})
    algo = make(name, build)
    algo.threads(1)
    algo.build(train)
    algo.set_query_args(**query)
    found = algo.rows(algo.search(queries, 10))
    assert found.shape == (40, 10) and found.dtype == np.int64
    recall = measure.recall(train, queries, found, scores, 10)
    assert recall == 1.0 if name in EXACT else recall >= 0.9, recall
    algo.save(tmp_path / "saved")
    assert measure.disk_bytes(tmp_path / "saved") > train.nbytes / 20


def test_tuner_picks_the_fastest_setting_meeting_the_target_everywhere():
    def rec(dataset, leaves, recall, p50):
        return {"algorithm": "scann", "dataset": dataset, "n": 1_000_000, "build_args": {"leaves_per_sqrt": 1},
                "query_args": {"leaves_fraction": leaves}, "applied_query_args": {"leaves_fraction": leaves},
                "recall@10": recall, "latency": {"p50_ms": p50}}
    results = [rec("synthetic-1M-32", 0.01, 0.90, 0.1), rec("synthetic-1M-32", 0.02, 0.96, 0.2),
               rec("synthetic-1M-32", 0.05, 0.99, 0.4), rec("synthetic-1M-64", 0.01, 0.94, 0.1),
               rec("synthetic-1M-64", 0.02, 0.94, 0.3), rec("synthetic-1M-64", 0.05, 0.97, 0.5)]
    t = tune(results)
    assert t["per_dataset"]["synthetic-1M-32"]["settings"] == {"leaves_per_sqrt": 1, "leaves_fraction": 0.02}
    assert t["per_dataset"]["synthetic-1M-64"]["settings"]["leaves_fraction"] == 0.05
    assert t["defaults"]["settings"] == {"leaves_per_sqrt": 1, "leaves_fraction": 0.05}
    assert t["defaults"]["min_recall@10"] >= TARGET


def test_tuner_chooses_per_k_among_the_first_ks_build():
    def rec(dataset, build, query, by_k):
        return {"algorithm": "scann", "dataset": dataset, "n": 1_000_000, "build_args": build, "query_args": query,
                "applied_query_args": query, "recall@10": by_k[10][0], "latency": {"p50_ms": by_k[10][1]},
                "by_k": {str(k): {"recall": r, "latency": {"p50_ms": ms, "mean_ms": ms}} for k, (r, ms) in by_k.items()}}
    b1, b2 = {"leaves_per_sqrt": 1}, {"leaves_per_sqrt": 2}
    fast, wide = {"leaves_fraction": 0.01, "points_per_result": 300, "reorder_per_k": 3}, \
        {"leaves_fraction": 0.01, "points_per_result": 1000, "reorder_per_k": 3}
    results = [rec(d, b1, fast, {10: (0.97, 0.1), 100: (0.90, 0.3)}) for d in ("synthetic-1M-32", "synthetic-1M-64")]
    results += [rec(d, b1, wide, {10: (0.99, 0.2), 100: (0.96, 0.6)}) for d in ("synthetic-1M-32", "synthetic-1M-64")]
    # another build, faster at k=100 but slower at k=10: k=10 chooses the build, so k=100 may not take it
    results += [rec(d, b2, fast, {10: (0.97, 0.15), 100: (0.97, 0.2)}) for d in ("synthetic-1M-32", "synthetic-1M-64")]
    # an old record, timed at k=10 only, counts at k=10 and nowhere else
    old = rec("synthetic-1M-32", b1, {"leaves_fraction": 0.005}, {10: (0.99, 0.05)})
    del old["by_k"]
    t = tune(results + [old])
    assert t["by_k"]["10"]["defaults"]["settings"] == {**b1, **fast}
    assert t["by_k"]["100"]["defaults"]["settings"] == {**b1, **wide}
    assert t["by_k"]["100"]["defaults"]["min_recall@100"] == 0.96
    assert t["by_k"]["10"]["per_dataset"]["synthetic-1M-32"]["settings"] == {**b1, "leaves_fraction": 0.005}
    assert search_row(t["by_k"]["100"]["defaults"], 100) == (100, 0.01, 1000, 3)
    assert "1000" not in t["by_k"] and t["defaults"] == t["by_k"]["10"]["defaults"]


def test_indexer_defaults_are_the_tuners_choice_per_k_in_the_committed_report():
    summary = json.loads((REPO / "benchmarks" / "reports" / "cpu" / "summary.json").read_text())
    defaults = IndexConfig()
    by_k = summary["tuner"]["by_k"]
    assert {"10", "100", "1000"} <= set(by_k)
    build = by_k["10"]["defaults"]["build"]
    assert {key: getattr(defaults, key) for key in build} == build
    rows = [search_row(by_k[k]["defaults"], int(k)) for k in sorted(by_k, key=int)]
    assert defaults.search_by_k == tuple(rows)
    for k in ("10", "100"):  # the issue's bar: recall@k >= 0.95 at k = 10 and 100 on every large synthetic set
        assert by_k[k]["defaults"][f"min_recall@{k}"] >= TARGET


def test_gpu_event_times_leave_the_first_call_out_and_time_each_call_between_its_events():
    from types import SimpleNamespace

    from scaleout.bench.gpu_devices import event_seconds

    clock, calls = [0.0], []  # milliseconds of a fake GPU's stream: each call of fn takes longer than the last

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            self.at = clock[0]

        def elapsed_time(self, end):
            return end.at - self.at

    def fn():
        calls.append(1)
        clock[0] += 1000.0 if len(calls) == 1 else 2.0 * len(calls)  # the first call: a compile, 1 s

    torch = SimpleNamespace(cuda=SimpleNamespace(Event=Event, synchronize=lambda: None))
    assert event_seconds(torch, fn, 3) == [0.004, 0.006, 0.008] and len(calls) == 4


def test_gpu_half_runs_where_a_gpu_is_visible_and_skips_with_a_note_where_none_is(tmp_path):
    from scaleout.bench.gpu_devices import detect

    backend, _ = detect()
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bruteforce.py"), "--out", str(out),
                           "--sizes", "5K-8", "--scann", "5K-8", "--seconds", "0.05"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if backend is None:
        assert "GPU half skipped: no GPU visible here" in proc.stdout and not out.exists()
    else:
        gpu = json.loads(out.read_text())
        assert gpu["backend"] == backend and gpu["results"], gpu
        assert next(r for r in gpu["results"] if r["dtype"] == "float32")["recall@10"] == 1.0


@pytest.mark.parametrize("library", ["tensorflow", "jax", "torch"])
def test_gpu_harness_on_the_cpu_feeds_the_report(tmp_path, library):
    # The same harness on the CPU (labelled so), GPU or not, then into a report.
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bruteforce.py"), "--out", str(out),
                           "--sizes", "5K-8", "--scann", "5K-8", "--cpu-bruteforce", "5K-8", "--seconds", "0.05",
                           "--cpu-check", library],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gpu = json.loads(out.read_text())
    assert gpu["device"] == f"CPU ({library}, harness check only, not a GPU result)" and gpu["backend"] == library
    fp32 = next(r for r in gpu["results"] if r["dtype"] == "float32")
    assert fp32["recall@10"] == 1.0 and {r["dtype"] for r in gpu["results"]} == {"float32", "bfloat16"}
    assert {r["algorithm"] for r in gpu["cpu_results"]} == {"bruteforce", "scann"}
    if library == "torch":
        assert {r["backend"] for r in gpu["results"]} == {"torch"} and "qps_by_k" in fp32
        # and into a report through the command users run: the GPU section and the cost table, priced as asked
        report = tmp_path / "report"
        made = run_cli("bench-report", "--results", REPO / "benchmarks" / "results" / "ann" / "synthetic-100K-32",
                       "--out", report, "--gpu-results", out, out, "--gpu-hour", "7.5", cwd=REPO)
        assert made.returncode == 0, made.stderr[-3000:]
        text = (report / "report.md").read_text()
        assert text.count("## GPU: CPU (torch, harness check only, not a GPU result) (gpu.json)") == 2  # one per file
        assert (report / "cpu-vs-gpu.png").is_file() and (report / "cpu-vs-gpu-2.png").is_file()
        assert "$7.50 per GPU-hour" in text and "| synthetic-5K-8 | 10 | ScaNN, CPU |" in text


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row (separator rows left out)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.lstrip().startswith("|") and not set(line.strip()) <= set("|-: ")]


def test_quick_suite_writes_a_finite_report_and_skips_what_is_done(pipeline_run, tmp_path):
    run, _, _ = pipeline_run
    args = ["bench", "--quick", "--run", run, "--results", tmp_path / "results", "--cache", tmp_path / "cache",
            "--report", tmp_path / "report"]
    first = run_cli(*args, cwd=REPO)
    assert first.returncode == 0, first.stderr[-4000:]
    counts = json.loads(first.stdout.splitlines()[0])
    assert counts["failed"] == 0 and counts["run"] > 0
    results = load_results(tmp_path / "results")
    cfg = load_config(REPO / "benchmarks" / "ann-quick.yaml")
    assert {r["dataset"] for r in results} == set(cfg.datasets)
    assert {r["algorithm"] for r in results} == set(cfg.algorithms)
    for r in results:
        assert r["algorithm"] not in EXACT or r["recall@10"] == 1.0, r
        values = [r["recall@10"], r["build_seconds"], r["latency"]["p50_ms"], *r["qps"].values()]
        assert all(math.isfinite(v) and v >= 0 for v in values), r
    report = (tmp_path / "report" / "report.md").read_text()
    for name in cfg.datasets:
        assert f"## {name}:" in report and (tmp_path / "report" / f"frontier-{name}.png").stat().st_size > 10_000
    assert (tmp_path / "report" / "latency-vs-size.png").is_file()
    assert "| ScaNN (scaleout, pybind) |" in report and "| FAISS HNSW |" in report and "p50 / floor" in report
    assert not re.search(r"\b(nan|inf)\b", report, re.IGNORECASE)
    tables = report.split("\n\n")  # a table is one paragraph: its header row first
    for table in (t for t in tables if t.lstrip().startswith("|")):
        rows = _table_rows(table)
        assert all(len(r) == len(rows[0]) and all(r) for r in rows), table  # no missing or empty cell
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["machine"]["cores"] >= 1 and "scann" in summary["machine"]["versions"]
    again = run_cli(*args[:-2], cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.splitlines()[0]) == {"run": 0, "skipped": counts["run"] + counts["skipped"],
                                                         "failed": 0}
