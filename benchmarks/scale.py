"""How time and memory grow with the data: `scaleout pipeline` on synthetic interactions at several sizes.

    python benchmarks/scale.py [--sizes 1M,5M,20M,100M] [--epochs 1] [--baselines popularity]
                               [--sample-users 20000] [--evaluate-below 100M] [--ray-workers 2]
    python benchmarks/scale.py --report-only     # the report again from benchmarks/results/scale.json
    python benchmarks/scale.py --prepare-only --sizes 5M,20M,100M [--repeats 3]   # prepare alone, again

With --prepare-only each size runs the prepare stage alone, timed and measured
as the pipeline times and measures it, and replaces only that stage's figures
of the sizes already in the results (the report marks them); with --repeats N
each size runs N times, in rounds across the sizes, and the median is kept.

Each size is one `scaleout pipeline` run in a child process (the local backend,
the default `quality` preset, seen items excluded): prepare, train, evaluate
(FactorizedTopK over every candidate and every test row), embed and index,
FactorizedTopK through the indexes, export, quality report. Through the
indexes and the quality report rank the test rows of a random sample of
test users (--sample-users, the same users in both, 95% intervals in their
reports); from --evaluate-below up a size runs prepare, train, embed and index
only. The pipeline's summary gives each stage's
wall time and peak resident memory (its own, the high-water mark reset at the
start of each stage); the child's whole peak comes from the kernel (wait4).

Shapes: up to 20M interactions, MovieLens 20M's, the users scaled with the
interactions (138,493 users at 20,000,263; 26,744 items throughout); at 100M,
10M users and 1M items. The synthetic source draws power-law popularity and
taste groups.

Figures of each size are merged into benchmarks/results/scale.json (a later
run adds sizes or replaces them); the report (scaleout.bench.scale_report),
benchmarks/reports/scale/README.md with log-log plots, shows every stage's seconds and peak memory per size and
the fitted slope of log(seconds) over log(interactions) from 5M up (1.0 grows
linearly).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaleout.bench.datasets import parse_size  # noqa: E402
from scaleout.bench.measure import machine  # noqa: E402
from scaleout.bench.scale_report import label, write_report  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "scale.json"
REPORT = REPO / "benchmarks" / "reports" / "scale"
ML20M = {"interactions": 20_000_263, "users": 138_493, "items": 26_744}
SAMPLE_USERS = 20_000  # test users through the indexes and in the quality report (a full pass at 20M: ~30 min)
EVALUATION_STAGES = ("evaluate", "through_index", "export", "quality")


def shape(interactions: int) -> dict:
    """Users and items at this many interactions (see the module docstring)."""
    if interactions >= 100_000_000:
        return {"interactions": interactions, "users": 10_000_000, "items": 1_000_000}
    users = max(100, round(interactions * ML20M["users"] / ML20M["interactions"]))
    return {"interactions": interactions, "users": users, "items": ML20M["items"]}


def training_data(synthetic: str | None, movielens: str):
    """(DataConfig, title) of a training benchmark's data: ``synthetic`` interactions (a size like 2M) at
    MovieLens 20M's shape, or MovieLens 100K from ``movielens`` when it is None; 2 training shards."""
    from scaleout.config import DataConfig

    if not synthetic:
        return DataConfig(source="movielens", path=movielens, train_shards=2), "MovieLens 100K"
    size = shape(parse_size(synthetic))
    return (DataConfig(source="synthetic", synthetic_interactions=size["interactions"], synthetic_items=size["items"],
                       synthetic_users=size["users"], train_shards=2),
            f"synthetic {synthetic} interactions (MovieLens 20M's shape: {size['users']:,} users, "
            f"{size['items']:,} items)")


def run_size(interactions: int, work: Path, epochs: int, baselines: list[str], log_dir: Path,
             sample_users: int = 0, skip: tuple[str, ...] = ()) -> dict:
    s = shape(interactions)
    run = work / f"run-{label(interactions)}"
    cmd = [str(Path(sys.executable).parent / "scaleout"), "pipeline", "--run", str(run), "--source", "synthetic",
           "--synthetic-users", str(s["users"]), "--synthetic-items", str(s["items"]),
           "--synthetic-interactions", str(s["interactions"]), "--epochs", str(epochs), "--exclude-seen",
           "--sample-users", str(sample_users), "--baselines", *baselines] + (["--skip", *skip] if skip else [])
    log_path = log_dir / f"pipeline-{label(interactions)}.log"
    print(f"{label(interactions)}: scaleout {' '.join(cmd[1:])}\n  log: {log_path}", flush=True)
    start = time.monotonic()
    with open(log_path, "w") as log, tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=log, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    seconds = time.monotonic() - start
    if child.returncode != 0:
        raise SystemExit(f"{label(interactions)}: the pipeline failed (exit {child.returncode}); see {log_path}")
    summary = json.loads(text[text.index("{"):])
    train = json.loads((run / "metrics" / "train.json").read_text())
    quality = summary["quality"] or {}
    evaluated = {}  # the test rows each evaluation stage ranked (a sample's, with --sample-users)
    for stage, name in (("through_index", "index_eval.json"), ("quality", "quality.json")):
        path = run / "metrics" / name
        if stage in summary["stages"] and path.is_file():
            report = json.loads(path.read_text())
            evaluated[stage] = report.get("sample", {}).get("rows", report.get("test_examples",
                                                                                report.get("test_interactions")))
    if "evaluate" in summary["stages"]:
        evaluated["evaluate"] = summary["counts"]["test"]
    return {
        "sample_users": sample_users,
        "skipped": list(skip),
        "evaluated_rows": evaluated,
        "shape": s,
        "counts": summary["counts"],
        "stages": summary["stages"],
        "seconds": round(seconds, 1),
        # the kernel's figure (ru_maxrss, KiB) is the high-water mark since the pipeline last reset it (at its
        # last stage's start), so the whole run's peak is the larger of it and every stage's
        "peak_rss_gib": round(max([usage.ru_maxrss * 1024 / 2**30] + [v["peak_rss_gib"] or 0 for v in
                                                                       summary["stages"].values()]), 3),
        "epochs": [{"epoch": e["epoch"], "examples_per_s": e["examples_per_second"], "seconds": e["seconds"]}
                   for e in train["epochs"]],
        "model_recall": quality.get("model", {}).get("exclude_seen"),
        "model_recall_ci95": _model_ci(run),
        "baselines": baselines,
        "run_bytes": sum(f.stat().st_size for f in run.rglob("*") if f.is_file()),
    }


PREPARE_ALONE = r"""
import json, sys
import scaleout
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare
from scaleout.stages import Stages

shape, out = json.loads(sys.argv[1]), sys.argv[2]
stages = Stages()
with stages("prepare"):
    prepare(DataConfig(source="synthetic", synthetic_users=shape["users"], synthetic_items=shape["items"],
                       synthetic_interactions=shape["interactions"]), out)
print(json.dumps(stages.figures["prepare"]))
"""


def prepare_alone(interactions: int, work: Path, log_dir: Path) -> dict:
    """The prepare stage of this size's pipeline run on its own, in a child process: its figures as the
    pipeline's summary gives them, and the date."""
    out = work / f"prepared-{label(interactions)}"
    log_path = log_dir / f"prepare-{label(interactions)}.log"
    print(f"{label(interactions)}: prepare alone\n  log: {log_path}", flush=True)
    with open(log_path, "w") as log:
        child = subprocess.run([sys.executable, "-c", PREPARE_ALONE, json.dumps(shape(interactions)), str(out)],
                               stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    if child.returncode != 0:
        raise SystemExit(f"{label(interactions)}: prepare failed (exit {child.returncode}); see {log_path}")
    return {**json.loads(child.stdout.strip().splitlines()[-1]), "measured_alone": time.strftime("%Y-%m-%d")}


def median_run(runs: list[dict]) -> dict:
    """One size's figures from several runs of it: the median seconds, the highest peak, and every run's
    seconds (a single run's figures as they are)."""
    if len(runs) == 1:
        return runs[0]
    return {**runs[0], "seconds": float(np.median([r["seconds"] for r in runs])),
            "peak_rss_gib": max(r["peak_rss_gib"] for r in runs), "runs_seconds": [r["seconds"] for r in runs]}


def _worker_peaks(seen: dict[int, int]) -> None:
    """Adds each Ray Train worker process's resident high-water mark (VmHWM, bytes) to ``seen`` by pid."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"RayTrainWorker" not in (proc / "cmdline").read_bytes():
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    seen[int(proc.name)] = max(seen.get(int(proc.name), 0), int(line.split()[1]) * 1024)
        except OSError:  # the process ended between the listing and the read
            continue


def ray_training(run: Path, workers: int, epochs: int, log_dir: Path, name: str) -> dict:
    """``scaleout train --backend ray`` on the run's prepared data (a local Ray instance of this machine): the
    epochs' examples/s and each worker's peak memory, read from /proc every half second while it trains (each
    worker reads only its own shards; the driver holds the tables and restores the model at the end)."""
    cmd = [str(Path(sys.executable).parent / "scaleout"), "train", "--run", str(run), "--backend", "ray",
           "--workers", str(workers), "--epochs", str(epochs)]
    log_path = log_dir / f"ray-train-{name}.log"
    print(f"{name}: scaleout {' '.join(cmd[1:])}\n  log: {log_path}", flush=True)
    peaks: dict[int, int] = {}
    start = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            _worker_peaks(peaks)
            time.sleep(0.5)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{name}: Ray training failed (exit {code}); see {log_path}")
    train = json.loads((run / "metrics" / "train.json").read_text())
    return {"workers": workers, "seconds": round(time.monotonic() - start, 1),
            "driver_peak_rss_gib": round(usage.ru_maxrss * 1024 / 2**30, 3),
            "epochs": [{"epoch": e["epoch"], "examples_per_s": e["examples_per_second"], "seconds": e["seconds"]}
                       for e in train["epochs"]],
            "worker_peak_rss_gib": sorted(round(v / 2**30, 3) for v in peaks.values())[-workers:]}


def _model_ci(run: Path) -> dict:
    """The model's 95% intervals of excl-seen recall@10 and @100 in a sampled quality report (else {})."""
    path = run / "metrics" / "quality.json"
    ci = json.loads(path.read_text())["model"]["exclude_seen"].get("ci95", {}) if path.is_file() else {}
    return {k: [round(v, 4) for v in ci[k]] for k in ("recall@10", "recall@100") if k in ci}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1M,5M,20M,100M", help="interactions per run, comma-separated (K and M)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--baselines", nargs="*", default=["popularity"],
                        help="baselines of each quality report (default popularity; iALS's grid takes hours at 20M)")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--prepare-only", action="store_true",
                        help="run only the prepare stage of each size (already in the results) and replace its "
                             "figures there")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --prepare-only: runs of each size, in rounds across the sizes; the median is kept")
    parser.add_argument("--sample-users", type=int, default=SAMPLE_USERS,
                        help="through the indexes and the quality report on this many test users' rows "
                             "(default %(default)s; 0: every test row)")
    parser.add_argument("--evaluate-below", default="100M",
                        help="sizes from this one up skip the evaluation stages (evaluate, through_index, export, "
                             "quality): prepare, one epoch, embed and index (default %(default)s)")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="also train each size's data with `scaleout train --backend ray` on this many workers "
                             "of a local Ray instance, measuring each worker's peak memory (default 0: no)")
    parser.add_argument("--ray-below", default="100M", help="sizes below this one get the Ray training (default "
                                                            "%(default)s)")
    args = parser.parse_args()

    results = json.loads(args.results.read_text()) if args.results.exists() else {"sizes": {}}
    if args.prepare_only:
        missing = [s for s in args.sizes.split(",") if label(parse_size(s)) not in results["sizes"]]
        if missing:
            raise SystemExit(f"--prepare-only replaces a stage of sizes already measured; {args.results} has no "
                             f"{', '.join(missing)} (has {', '.join(results['sizes'])})")
        work = Path(args.work or tempfile.mkdtemp(prefix="scaleout-scale-"))
        work.mkdir(parents=True, exist_ok=True)
        sizes = [parse_size(s) for s in args.sizes.split(",")]
        runs: dict[int, list[dict]] = {size: [] for size in sizes}
        for round_ in range(args.repeats):  # rounds across the sizes: drift over the hour reaches every size
            for size in sizes:
                runs[size].append(prepare_alone(size, work, work))
                print(f"{label(size)} (round {round_ + 1} of {args.repeats}): prepare "
                      f"{runs[size][-1]['seconds']:.1f} s, peak {runs[size][-1]['peak_rss_gib']:.2f} GiB", flush=True)
        for size in sizes:
            figures = median_run(runs[size])
            results["sizes"][label(size)]["stages"]["prepare"] = figures
            print(f"{label(size)}: prepare {figures['seconds']:.1f} s (median of {len(runs[size])}), peak "
                  f"{figures['peak_rss_gib']:.2f} GiB", flush=True)
        args.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    elif not args.report_only:
        results.update(machine=machine(), epochs=args.epochs, baselines=args.baselines,
                       shape_rule="MovieLens 20M's users per interaction and its 26,744 items up to 20M; "
                                  "10M users and 1M items at 100M.")
        work = Path(args.work or tempfile.mkdtemp(prefix="scaleout-scale-"))
        work.mkdir(parents=True, exist_ok=True)
        for size in [parse_size(s) for s in args.sizes.split(",")]:
            skip = EVALUATION_STAGES if size >= parse_size(args.evaluate_below) else ()
            figures = run_size(size, work, args.epochs, args.baselines, work, args.sample_users, skip)
            if args.ray_workers and size < parse_size(args.ray_below):
                figures["ray"] = ray_training(work / f"run-{label(size)}", args.ray_workers, args.epochs, work,
                                              label(size))
                print(f"{label(size)}: Ray training on {args.ray_workers} workers: "
                      f"{figures['ray']['epochs'][-1]['examples_per_s']:,.0f} examples/s, each worker's peak "
                      f"{figures['ray']['worker_peak_rss_gib']} GiB", flush=True)
            results["sizes"][label(size)] = figures
            stages = ", ".join(f"{k} {v['seconds']:.0f} s / {v['peak_rss_gib']:.2f} GiB"
                               for k, v in figures["stages"].items())
            print(f"{label(size)}: {figures['seconds']:.0f} s, peak {figures['peak_rss_gib']:.2f} GiB; {stages}",
                  flush=True)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")  # kept after each size
            if not args.keep:
                subprocess.run(["rm", "-rf", str(work / f"run-{label(size)}")], check=True)
    path = write_report(results, args.report)
    args.results.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
