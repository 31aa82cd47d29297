"""A checkpoint every epoch against at most one every ``--checkpoint-min-interval`` seconds, on Ray workers.

    python benchmarks/checkpoint_cadence.py [--movielens DIR] [--epochs 10] [--workers 2] [--rounds 2]
    python benchmarks/checkpoint_cadence.py --synthetic 2M --epochs 3 --every-steps 200   # within epochs too

Ray Train's controller takes one report from each worker per health check (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``,
2 s by default; a report queue of one per worker). At the default preset on ml-100k an epoch takes well under
that, so a checkpoint every epoch queued its reports: under the "async" upload the uploads waited in turn in
Ray Train's threads, and the last epoch's checkpoint, uploaded in place, waited for all of them before
``fit_ray`` could return. This script trains the default preset (``--epochs``, default the preset's 10) on
``--workers`` Ray workers of 1 CPU (a local Ray instance of 2 CPUs, checkpoints on this machine's disk) with
``checkpoint_min_interval`` 0 (a checkpoint every epoch, as before) and with its default, in turn, the order
swapped every round. For each run:

- fit: the whole ``fit_ray`` call, wall seconds (Ray Train's start, the epochs, the checkpoints, the final
  model rebuilt from the last one);
- epochs: the epochs' own seconds, summed (checkpoints outside them);
- tail: from the end of the last epoch's steps (its ``ended_at``) to ``fit_ray``'s return: the last
  checkpoint's write and upload, whatever it waited for, the workers' shutdown and the rebuild;
- checkpoints: how many the run kept, and the median stall of the ones before the last.

With ``--every-steps S`` a third setting also keeps a checkpoint within epochs, every S steps
(``--checkpoint-every-steps``) at the default least interval (``--within-min-interval``); its row adds how
many were kept within epochs and their mean stall (each epoch's history entry sums them). Epochs count their own checkpoints' stalls, so
examples/s (median of epochs 2+) says what they cost. A checkpoint within an epoch matters where an epoch
is long: ``--synthetic N`` trains on the synthetic source at MovieLens 20M's shape instead of ml-100k
(epochs of seconds rather than a fraction of one, longer than the least interval).

Prints the table and writes benchmarks/results/checkpoint_cadence.json (with --synthetic N,
checkpoint_cadence_synthetic-N.json beside it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401  (TensorFlow's environment first)

from scaleout.bench.measure import machine, steady_examples_per_second  # noqa: E402
from scaleout.config import TrainConfig  # noqa: E402
from scaleout.data.prepare import prepare  # noqa: E402
from scaleout.rundir import RunDir  # noqa: E402
from scaleout.tfenv import RUNTIME_ENV_VARS  # noqa: E402
from scaleout.train.presets import configs  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "checkpoint_cadence.json"
DEFAULT = TrainConfig.checkpoint_min_interval
SETTINGS = {"every epoch (min interval 0)": (0.0, 0), f"min interval {DEFAULT:g} s (default)": (DEFAULT, 0)}


def settings(every_steps: int, within_interval: float = DEFAULT) -> dict[str, tuple[float, int]]:
    """Name -> (checkpoint_min_interval, checkpoint_every_steps) of each setting run."""
    if not every_steps:
        return dict(SETTINGS)
    return {**SETTINGS, f"and every {every_steps} steps within epochs (min interval {within_interval:g} s)":
            (within_interval, every_steps)}


def figures(history: list[dict], returned_at: float, fit_seconds: float) -> dict:
    """One run's figures from its history (each epoch's ``seconds``, ``ended_at``, ``checkpoint_stall_seconds``)."""
    stalls = [e["checkpoint_stall_seconds"] for e in history if "checkpoint_stall_seconds" in e]
    within = sum(e.get("checkpoints_within", 0) for e in history)
    within_stall = sum(e.get("checkpoint_within_stall_seconds", 0.0) for e in history)
    return {"within": within, "mean_within_stall_seconds": round(within_stall / within, 3) if within else None,
            "fit_seconds": round(fit_seconds, 2), "epoch_seconds": round(sum(e["seconds"] for e in history), 2),
            "tail_seconds": round(returned_at - history[-1]["ended_at"], 2),
            "checkpoints": len(stalls) + 1,  # the last epoch's stall is not in its own state.json
            "median_stall_seconds": round(statistics.median(stalls), 3) if stalls else None,
            "examples_per_second": round(steady_examples_per_second(history), 1),
            "checkpointed_epochs": [e["epoch"] for e in history if "checkpoint_stall_seconds" in e] + [len(history)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every-steps", type=int, default=0, metavar="S",
                        help="also run with a checkpoint within epochs every S steps (default: not run)")
    parser.add_argument("--within-min-interval", type=float, default=DEFAULT, metavar="SECONDS",
                        help=f"that setting's least interval between checkpoints (default {DEFAULT:g})")
    parser.add_argument("--synthetic", default=None, metavar="N",
                        help="synthetic interactions at MovieLens 20M's shape (e.g. 2M) instead of MovieLens 100K")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default {RESULTS} (with --synthetic N: checkpoint_cadence_synthetic-N.json)")
    args = parser.parse_args()
    from scale import training_data  # beside this script (benchmarks/scale.py)

    data_cfg, data = training_data(args.synthetic, args.movielens)
    out = args.out or (RESULTS.with_name(f"checkpoint_cadence_synthetic-{args.synthetic}.json") if args.synthetic
                       else RESULTS)
    runs_of = settings(args.every_steps, args.within_min_interval)
    import ray

    from scaleout.train.ray_backend import fit_ray

    model_cfg, train_cfg = configs("quality", train={"epochs": args.epochs} if args.epochs else {})
    results = {"machine": machine(), "data": data, "epochs": train_cfg.epochs, "workers": args.workers,
               "batch_size": train_cfg.batch_size, "every_steps": args.every_steps, "health_check_interval_s": float(
                   os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)), "runs": {name: [] for name in runs_of}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(data_cfg, work / "data")
        ray.init(num_cpus=2, runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
        try:
            for round_ in range(args.rounds):
                order = list(runs_of.items())
                for index, (name, (interval, every)) in enumerate(order if round_ % 2 == 0 else order[::-1]):
                    cfg = dataclasses.replace(train_cfg, backend="ray", workers=args.workers, cpus_per_worker=1,
                                              checkpoint_min_interval=interval, checkpoint_every_steps=every,
                                              storage=str(work / f"ckpt-{round_}-{index}"))
                    start = time.monotonic()
                    _, history, _ = fit_ray(RunDir(work), model_cfg, cfg)
                    returned_at, seconds = time.time(), time.monotonic() - start
                    run = {"round": round_ + 1, **figures(history, returned_at, seconds)}
                    results["runs"][name].append(run)
                    print(f"round {round_ + 1}, {name}: fit {run['fit_seconds']:.1f} s, tail "
                          f"{run['tail_seconds']:.1f} s, {run['checkpoints']} checkpoints at epochs' ends, "
                          f"{run['within']} within", flush=True)
        finally:
            ray.shutdown()
    print(f"\nthe default preset on {args.workers} Ray workers, {data}, {train_cfg.epochs} epochs, checkpoints on "
          f"this machine's disk; median of {args.rounds} round(s)\n")
    print("| checkpoints | fit s | epochs s | tail s | kept at epochs' ends | stall s (median) | kept within "
          "epochs | stall s (mean) | examples/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for name, runs in results["runs"].items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("fit_seconds", "epoch_seconds", "tail_seconds",
                                                                  "checkpoints", "within", "examples_per_second")}
        for key in ("median_stall_seconds", "mean_within_stall_seconds"):
            values = [r[key] for r in runs if r[key] is not None]
            med[key] = statistics.median(values) if values else None
        summary[name] = med
        stall, within_stall = (f"{med[k]:.3f}" if med[k] is not None else "-"
                               for k in ("median_stall_seconds", "mean_within_stall_seconds"))
        print(f"| {name} | {med['fit_seconds']:.1f} | {med['epoch_seconds']:.1f} | {med['tail_seconds']:.1f} | "
              f"{med['checkpoints']:g} | {stall} | {med['within']:g} | {within_stall} | "
              f"{med['examples_per_second']:,.0f} |")
    results["summary"] = summary
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
