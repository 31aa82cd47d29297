"""Where the two cores go while Ray Train trains: each core's time in its pinned worker, in Ray's other processes
and idle, for 1 and 2 Ray workers in turn.

    python benchmarks/ray_cores.py --movielens ../shared/data/ml-100k [--batch 8192] [--epochs 6] [--rounds 2]

Starts a local Ray instance of 2 CPUs (as benchmarks/ray_scaling.py does) and trains the default preset at
--batch (default the tutorial's 8,192, where 2 workers reach less of twice 1 worker than at 1,024) on 1 and 2
Ray workers of 1 CPU each, each pinned to a core (scaleout.train.cpus). Twice a second it reads each core's
busy and idle time (/proc/stat), each pinned worker's CPU time and every other process's (psutil), and over
the epochs after the first it reports, for each core: its worker, the other processes (Ray's daemons and
actors, and this driver with its sampling, about 0.03 of a core), and idle time, which on a core with a
pinned worker is that worker waiting (on the other worker at the step's collectives, or on its input); and
the other processes by name. A 2-worker step waits for the slower worker, so any of the others' time on
either core is on its critical path; 1 worker leaves them a core of their own. Prints examples/s (median of
the epochs after the first) and each round's scaling efficiency (2 workers / (2 x 1 worker)) beside them.
Writes benchmarks/results/ray_cores.json.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import scaleout  # noqa: F401  (TensorFlow's environment first)
import psutil

from scaleout.bench.measure import steady_examples_per_second
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare
from scaleout.rundir import RunDir
from scaleout.tfenv import RUNTIME_ENV_VARS
from scaleout.train.presets import configs

RESULTS = Path(__file__).parent / "results" / "ray_cores.json"
WORKER = "RayTrainWorker"


def cores() -> dict[int, tuple[int, int]]:
    """Each core's (busy, idle) jiffies so far; steal counts as neither (it was 0 here)."""
    out = {}
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                v = [int(x) for x in values]
                out[int(name[3:])] = (v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4])
    return out


def processes() -> dict[int, tuple[str, int | None, float]]:
    """Every process: (name, the core its worker is pinned to or None, CPU seconds so far)."""
    out = {}
    for process in psutil.process_iter():
        try:
            name, times = process.name(), process.cpu_times()
            pinned = process.cpu_affinity() if WORKER in name else []
        except (psutil.Error, OSError):
            continue
        out[process.pid] = (WORKER if WORKER in name else name[:40], pinned[0] if len(pinned) == 1 else None,
                            times.user + times.system)
    return out


class Sampler(threading.Thread):
    def __init__(self, every: float = 0.5):
        super().__init__(daemon=True)
        self.every, self.samples, self.done = every, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            self.samples.append((time.monotonic(), cores(), processes()))
            self.done.wait(self.every)


def where_time_went(samples: list, skip_seconds: float, workers: int) -> dict:
    """Each core's shares (worker, others, idle) and the other processes' CPUs, averaged over the intervals in
    which the workers trained (their CPU over half a core each), after the first ``skip_seconds`` of those."""
    hz = os.sysconf("SC_CLK_TCK")
    intervals = []
    for (t1, c1, p1), (t2, c2, p2) in zip(samples, samples[1:]):
        dt = t2 - t1
        by_core = collections.Counter()
        others = collections.Counter()
        for pid, (name, core, seconds) in p2.items():
            if pid not in p1:
                continue
            used = (seconds - p1[pid][2]) / dt
            if name == WORKER and core is not None:
                by_core[core] += used
            else:
                others[name] += used
        if sum(by_core.values()) < 0.5 * workers:
            continue
        busy = {core: (c2[core][0] - c1[core][0]) / hz / dt for core in c2}
        intervals.append((t1, dt, by_core, busy, others))
    if not intervals:
        return {}
    kept = [i for i in intervals if i[0] >= intervals[0][0] + skip_seconds] or intervals
    result = {"seconds": round(sum(i[1] for i in kept), 1), "cores": {}}
    for core in sorted(kept[0][3]):
        worker = statistics.fmean(i[2][core] for i in kept)
        busy = statistics.fmean(min(i[3][core], 1.0) for i in kept)
        result["cores"][core] = {"worker": round(min(worker, busy), 3), "others": round(max(busy - worker, 0.0), 3),
                                 "idle": round(1.0 - busy, 3)}
    total = collections.Counter()
    for i in kept:
        total.update(i[4])
    result["others_cpus"] = {name: round(v / len(kept), 3) for name, v in total.most_common(12)
                             if v / len(kept) >= 0.001}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import ray

    from scaleout.train.ray_backend import fit_ray

    results = {"batch_size": args.batch, "epochs": args.epochs, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = prepare(DataConfig(source="movielens", path=args.movielens, train_shards=2), Path(tmp) / "data")
        model_cfg, train_cfg = configs("quality", train={"epochs": args.epochs, "batch_size": args.batch})
        ray.init(num_cpus=2, runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
        try:
            for round_ in range(args.rounds):
                for workers in (1, 2):
                    cfg = dataclasses.replace(train_cfg, backend="ray", workers=workers, cpus_per_worker=1,
                                              storage=str(Path(tmp) / f"ckpt-{round_}-{workers}"))
                    sampler = Sampler()
                    sampler.start()
                    try:
                        model, history, _ = fit_ray(RunDir(Path(tmp)), model_cfg, cfg)
                    finally:
                        sampler.done.set()
                        sampler.join()
                    rate = steady_examples_per_second(history)
                    run = {"round": round_ + 1, "workers": workers, "examples_per_second": round(rate, 1),
                           "cpu_pinning": model.trained_pinning,
                           **where_time_went(sampler.samples, history[0]["seconds"], workers)}
                    results["runs"].append(run)
                    print(f"round {round_ + 1}, {workers} worker(s): {rate:,.0f} examples/s", flush=True)
        finally:
            ray.shutdown()
    print(f"\nbatch {args.batch:,}, {args.epochs} epochs; each core's time over the epochs after the first "
          "(worker / other processes / idle)")
    efficiency = {}
    for run in results["runs"]:
        shares = "; ".join(f"core {core}: {c['worker']:.2f} / {c['others']:.2f} / {c['idle']:.2f}"
                           for core, c in run.get("cores", {}).items())
        print(f"round {run['round']}, {run['workers']} worker(s): {run['examples_per_second']:>9,.0f} examples/s  "
              f"{shares}")
        print("    other processes (CPUs): " + ", ".join(f"{n} {v:.3f}" for n, v in run.get("others_cpus", {}).items()))
        efficiency.setdefault(run["round"], {})[run["workers"]] = run["examples_per_second"]
    results["scaling_efficiency_by_round"] = [round(r[2] / (2 * r[1]), 3) for r in efficiency.values()]
    print("scaling efficiency 2 / (2 x 1 worker) by round:", results["scaling_efficiency_by_round"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
