"""What a busy second core costs a training core: the same run's epochs with the other core working and idle.

    python benchmarks/core_contention.py [--batch 8192 1024] [--epochs 60] [--every 8]

A 2-worker Ray run keeps both cores busy, where the 1-worker run it is measured against (scaling efficiency)
leaves the second core idle. Two things can then slow a worker's core: the hardware the cores share (cache,
memory, the host's clock) and the processes that run wherever a core is free (Ray's daemons and actors, the
driver). This machine's speed drifts by a third between minutes, so runs made one after the other cannot tell
a few percent apart; here one run's epochs are compared with each other instead. A load (``--load``: a one-thread
training at the same batch, the work a second worker does) runs pinned to CPU 1 and is stopped and continued
(SIGSTOP, SIGCONT) every ``--every`` seconds, while on CPU 0 one of:

- one process (no Ray), one thread, pinned to CPU 0: what the shared hardware costs;
- 1 Ray worker of 1 CPU through scaleout's Ray backend (pinned to CPU 0 by scaleout.train.cpus): the hardware,
  and Ray's processes, which with the other core idle run there and with it busy share CPU 0 too.

Each epoch (its start and end from ``ended_at`` in the run's history) that lies inside one window of the load's
(a margin after each switch) counts as "other core busy" or "other core idle"; the epochs across a switch and
the first epoch (tracing) are left out. Prints each run's median epoch with the other core busy and idle and
their ratio (1.00: no cost), at each ``--batch`` (default the tutorial's 8,192 and the default preset's 1,024).
A run none of whose epochs fits inside one window (epochs longer than ``--every`` less the margin) stops the
script with a non-zero exit naming its epochs' length and the ``--every`` that would hold them.
Needs 2 CPUs. Writes benchmarks/results/core_contention.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401  (TensorFlow's environment first)

from scaleout.bench.measure import machine  # noqa: E402
from scaleout.config import DataConfig  # noqa: E402
from scaleout.data.dataset import Dataset  # noqa: E402
from scaleout.data.prepare import prepare  # noqa: E402
from scaleout.rundir import RunDir  # noqa: E402
from scaleout.tfenv import RUNTIME_ENV_VARS  # noqa: E402
from scaleout.train.presets import configs  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "core_contention.json"
RUNS = ("one process", "1 Ray worker")
MARGIN = 0.3  # seconds after a switch before an epoch counts: the stopped load's last work and the scheduler's


def classify(epochs: list[tuple[float, float]], windows: list[tuple[float, float, bool]],
             margin: float = MARGIN) -> dict[str, list[float]]:
    """Each epoch ``(start, end)`` inside one window ``(start, end, load running)`` (``margin`` seconds after the
    window opens): its seconds under "busy" or "idle"; an epoch across a switch is in neither."""
    out = {"busy": [], "idle": []}
    for start, end in epochs:
        for opened, closed, running in windows:
            if opened + margin <= start and end <= closed:
                out["busy" if running else "idle"].append(end - start)
                break
    return out


def spans(history: list[dict]) -> list[tuple[float, float]]:
    """(start, end) of each epoch after the first, from its ``ended_at`` and ``seconds``."""
    return [(e["ended_at"] - e["seconds"], e["ended_at"]) for e in history[1:]]


class Toggled:
    """The load on ``cpu``: started, then stopped and continued every ``every`` seconds until ``stop()``;
    ``windows``: (start, end, running) of each stretch."""

    def __init__(self, data: Path, batch: int, cpu: int, every: float, warm: float):
        self.process = subprocess.Popen([sys.executable, __file__, "--load-worker", str(data), str(batch), str(cpu)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.every, self.windows, self.done = every, [], threading.Event()
        time.sleep(warm)  # its start and the tracing of its first steps, not counted
        if self.process.poll() is not None:
            raise RuntimeError(f"the load on CPU {cpu} exited with {self.process.returncode} before the run")
        self.thread = threading.Thread(target=self._switch, daemon=True)
        self.thread.start()

    def _switch(self):
        running, opened = True, time.time()
        while not self.done.wait(self.every):
            self.process.send_signal(signal.SIGSTOP if running else signal.SIGCONT)
            now = time.time()
            self.windows.append((opened, now, running))
            running, opened = not running, now
        self.windows.append((opened, time.time(), running))

    def stop(self):
        self.done.set()
        self.thread.join()
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()


def load_worker(data: str, batch: int, cpu: int) -> None:
    """The load: one thread on ``cpu`` training the default preset at ``batch`` until killed."""
    os.sched_setaffinity(0, {cpu})
    train(Dataset(Path(data)), batch, 1_000_000)


def train(dataset: Dataset, batch: int, epochs: int) -> list[dict]:
    from scaleout.tfenv import tf
    from scaleout.train.local import fit

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model_cfg, train_cfg = configs("quality", train={"epochs": epochs, "batch_size": batch})
    return fit(dataset, model_cfg, train_cfg)[1]


def one_process_worker(data: str, batch: int, epochs: int, out: str) -> None:
    """The measured one process: one thread on CPU 0; its history written to ``out``."""
    os.sched_setaffinity(0, {0})
    Path(out).write_text(json.dumps(train(Dataset(Path(data)), batch, epochs)))


def measured(name: str, dataset: Dataset, batch: int, epochs: int, work: Path) -> list[dict]:
    if name == "one process":
        out = work / f"history-{batch}.json"
        subprocess.run([sys.executable, __file__, "--one-process-worker", str(dataset.path), str(batch), str(epochs),
                        str(out)], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())
    from scaleout.train.ray_backend import fit_ray

    model_cfg, train_cfg = configs("quality", train={"epochs": epochs, "batch_size": batch})
    cfg = dataclasses.replace(train_cfg, backend="ray", workers=1, cpus_per_worker=1,
                              storage=str(work / f"ckpt-{batch}-{time.monotonic_ns()}"))
    model, history, _ = fit_ray(RunDir(work), model_cfg, cfg)
    if not model.trained_pinning.startswith("worker 0 of 1 on this node pinned to CPUs [0]"):
        raise RuntimeError(f"the Ray worker was not on CPU 0 alone: {model.trained_pinning}")
    return history


def unfit_windows(epochs: list[tuple[float, float]], got: dict[str, list[float]], every: float,
                  margin: float = MARGIN) -> str | None:
    """Why no epoch of a run counted (``got`` empty on both sides), naming the epochs' length against the
    windows' and the ``--every`` that would hold them; None where some epoch counted."""
    if got["busy"] or got["idle"]:
        return None
    if not epochs:
        return "the run had no epoch after its first (give more --epochs)"
    median = statistics.median(end - start for start, end in epochs)
    return (f"no epoch fitted inside one of the load's windows: its median epoch took {median:.2f} s, and a "
            f"window of --every {every:g} s holds an epoch of at most {every - margin:.2f} s (the first {margin:g} s "
            f"after a switch do not count); give --every {math.ceil(2 * (median + margin))} or more")


def summary(epochs: dict[str, list[float]]) -> dict:
    busy, idle = (statistics.median(epochs[k]) if epochs[k] else None for k in ("busy", "idle"))
    return {"epochs_busy": len(epochs["busy"]), "epochs_idle": len(epochs["idle"]),
            "median_seconds_busy": busy, "median_seconds_idle": idle,
            "busy_over_idle": round(busy / idle, 3) if busy and idle else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--batch", type=int, nargs="+", default=[8192, 1024])
    parser.add_argument("--epochs", type=int, default=60, help="epochs of each measured run (default %(default)s)")
    parser.add_argument("--every", type=float, default=8.0, help="seconds between the load's switches")
    parser.add_argument("--warm", type=float, default=20.0, help="seconds the load runs before a measured run")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.every <= MARGIN:
        parser.error(f"--every {args.every:g}: a window must be longer than the {MARGIN:g} s margin after a switch")
    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        sys.exit(f"core_contention needs CPUs 0 and 1; this process may run on {sorted(os.sched_getaffinity(0))}")
    import ray

    results = {"machine": machine(), "data": "MovieLens 100K", "epochs": args.epochs, "every_seconds": args.every,
               "margin_seconds": MARGIN, "by_batch": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = prepare(DataConfig(source="movielens", path=args.movielens, train_shards=2), work / "data")
        if "1 Ray worker" in args.runs:
            ray.init(num_cpus=2, runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
        try:
            for batch in args.batch:
                for name in args.runs:
                    load = Toggled(dataset.path, batch, 1, args.every, args.warm)
                    try:
                        history = measured(name, dataset, batch, args.epochs, work)
                    finally:
                        load.stop()
                    got = classify(spans(history), load.windows)
                    unfit = unfit_windows(spans(history), got, args.every)
                    if unfit:
                        sys.exit(f"core_contention: batch {batch:,}, {name}: {unfit}")
                    results["by_batch"].setdefault(str(batch), {})[name] = {**summary(got), "seconds": got}
                    s = results["by_batch"][str(batch)][name]
                    print(f"batch {batch:,}, {name}: {s['epochs_busy']} epochs with the other core busy, "
                          f"{s['epochs_idle']} idle; busy / idle {s['busy_over_idle']}", flush=True)
        finally:
            if ray.is_initialized():
                ray.shutdown()
    print(f"\nmedian epoch (s) of one run on CPU 0 while a one-thread training on CPU 1 runs or is stopped "
          f"(switched every {args.every:g} s)\n")
    print("| batch | run | other core busy | other core idle | busy / idle | epochs busy / idle |")
    print("|---|---|---|---|---|---|")

    def fmt(v):
        return f"{v:.3f}" if v is not None else "-"

    for batch, runs in results["by_batch"].items():
        for name, s in runs.items():
            print(f"| {int(batch):,} | {name} | {fmt(s['median_seconds_busy'])} | {fmt(s['median_seconds_idle'])} | "
                  f"{fmt(s['busy_over_idle'])} | {s['epochs_busy']} / {s['epochs_idle']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    if len(sys.argv) > 1 and sys.argv[1] == "--load-worker":
        load_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--one-process-worker":
        one_process_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        ended(main)
