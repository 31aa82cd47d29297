"""How long 2 Ray workers stand still for each checkpoint: its write, and its upload run while the next epoch
trains or waited for.

    python benchmarks/checkpoint_upload.py [--movielens DIR] [--synthetic 1M] [--epochs 5] [--rounds 2]

1. The write. In each of 2 Ray Train workers under MultiWorkerMirroredStrategy (the default preset's model, as
   a worker builds it), a checkpoint of the whole model and one of what scaleout's workers write
   (``scaleout.train.checkpoints.checkpoint_of``: the towers and the optimizer, not the metrics' variables,
   which such a save reads across the workers one collective each), in turn, --write-repeats times each.
2. The runs. Trains the default preset on 2 Ray workers (a local Ray instance of 2 CPUs) with a checkpoint every epoch
(``checkpoint_min_interval`` 0; scaleout's default until 2026-12-03), the checkpoints stored in a local S3-compatible server (moto 5.2.5 on 127.0.0.1, the
tests' server: objects in memory, HTTP through Python, so an upload's time here is a floor for a real store's)
and, for reference, on this machine's disk; each store with ``checkpoint_upload`` "sync" (the workers wait for
the upload, as every release before this did) and "async" (the default: Ray Train uploads rank 0's copy in a
thread while the next epoch trains), in turn, for --rounds rounds (the order swapped every round). For each:

- stall: the seconds the workers stood still for a checkpoint (its write, Ray Train's report, and under "sync"
  the upload): the ``checkpoint_stall_seconds`` of every epoch but the last (whose state.json was written
  before its own);
- write: the local write alone (``checkpoint_write_seconds``);
- epoch: the epoch's own time, the checkpoint outside it (scaleout's examples/s figures);
- fit: the whole ``fit_ray`` call (Ray Train's start, every epoch and checkpoint, the final upload waited for,
  the model rebuilt from the last checkpoint), wall seconds.

With --synthetic N the data is the synthetic source at MovieLens 20M's shape (benchmarks/scale.py): larger
tables, a larger checkpoint. Prints the table and writes benchmarks/results/checkpoint_upload.json (with
--synthetic N: checkpoint_upload_synthetic-N.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' local S3 server

import scaleout  # noqa: E402
from s3server import local_s3, with_s3_env  # noqa: E402
from scale import training_data  # noqa: E402  (MovieLens 100K or synthetic at MovieLens 20M's shape)
from scaleout.bench.measure import steady_examples_per_second  # noqa: E402
from scaleout.data.prepare import prepare  # noqa: E402
from scaleout.rundir import RunDir  # noqa: E402
from scaleout.tfenv import RUNTIME_ENV_VARS  # noqa: E402
from scaleout.train.presets import configs  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "checkpoint_upload.json"
MODES = ("sync", "async")


def time_writes(config: dict) -> None:
    """In each of 2 Ray Train workers (MultiWorkerMirroredStrategy, the default preset's model, as train_func
    builds it): a checkpoint write of the whole model and one of ``checkpoint_of``'s, in turn, ``repeats`` times
    each (the first of each traces and is dropped); rank 0 writes the seconds to ``config["out"]``."""
    import scaleout  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import ray.train

    from scaleout.tfenv import tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    from scaleout.data.dataset import Dataset
    from scaleout.train.model import build_for_dataset
    from scaleout.train.checkpoints import checkpoint_of

    with strategy.scope():
        model = build_for_dataset(configs("quality")[0], Dataset(config["data"]))
        model.optimizer.build(model.trainable_variables)
    savers = {"whole model": tf.train.Checkpoint(model=model, optimizer=model.optimizer),
              "towers and optimizer (checkpoint_of)": checkpoint_of(model)}
    seconds: dict[str, list[float]] = {name: [] for name in savers}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(config["repeats"] + 1):
            for name, saver in savers.items():
                start = time.perf_counter()
                saver.write(os.path.join(tmp, f"{i}-{len(seconds[name])}-{name[:5]}", "weights"))
                if i:
                    seconds[name].append(time.perf_counter() - start)
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["out"]).write_text(json.dumps(seconds))


def writes(data: Path, tmp: Path, repeats: int) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    out = tmp / "writes.json"
    TensorflowTrainer(time_writes, train_loop_config={"data": str(data), "repeats": repeats, "out": str(out)},
                      scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                      run_config=RunConfig(name="writes", storage_path=str(tmp / "writes"))).fit()
    seconds = json.loads(out.read_text())
    result = {name: {"median_ms": round(1000 * statistics.median(s), 1), "ms": [round(1000 * x, 1) for x in s]}
              for name, s in seconds.items()}
    whole, towers = (result[name]["median_ms"] for name in seconds)
    result["whole / towers"] = round(whole / towers, 2)
    return result


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR",
                                                             str(REPO.parent / "shared" / "data" / "ml-100k")))
    parser.add_argument("--synthetic", default=None, metavar="N",
                        help="synthetic interactions at MovieLens 20M's shape instead of MovieLens 100K")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every store and mode (default %(default)s)")
    parser.add_argument("--write-repeats", type=int, default=20, help="writes timed in part 1 (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    data_cfg, title = training_data(args.synthetic, args.movielens)
    out = args.out or (RESULTS.with_name(f"checkpoint_upload_synthetic-{args.synthetic}.json") if args.synthetic
                       else RESULTS)

    import ray

    from scaleout.train.checkpoints import find_latest_checkpoint
    from scaleout.train.ray_backend import fit_ray

    model_cfg, train_cfg = configs("quality", train={"epochs": args.epochs})
    runs: dict[str, list[dict]] = {}
    counter = itertools.count()  # every run checkpoints to a new place (a run refuses an earlier one's)
    with local_s3() as (env, make_bucket), tempfile.TemporaryDirectory() as tmp:
        undo = with_s3_env(env)  # before Ray starts: the workers' runtime environment forwards it
        try:
            bucket = make_bucket("bench")
            prepare(data_cfg, Path(tmp) / "data")
            stores = {"S3 (moto, local)": lambda n: f"{bucket}/checkpoints-{n}",
                      "local disk": lambda n: str(Path(tmp) / f"checkpoints-{n}")}
            ray.init(num_cpus=2, runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
            try:
                written = writes(Path(tmp) / "data", Path(tmp), args.write_repeats)
                print("1. a checkpoint's write in each of 2 Ray workers, ms (median of "
                      f"{args.write_repeats}, in turn): " + ", ".join(
                          f"{name} {row['median_ms']}" for name, row in written.items() if isinstance(row, dict))
                      + f"; whole / towers {written['whole / towers']}", flush=True)
                for round_ in range(args.rounds):
                    for store, where in stores.items():
                        for mode in (MODES if round_ % 2 == 0 else MODES[::-1]):
                            location = where(next(counter))
                            # a checkpoint every epoch (no least interval): the stall of each is the measure
                            cfg = dataclasses.replace(train_cfg, backend="ray", workers=2, cpus_per_worker=1,
                                                      storage=location, checkpoint_upload=mode,
                                                      checkpoint_min_interval=0.0)
                            start = time.monotonic()
                            _, history, _ = fit_ray(RunDir(Path(tmp)), model_cfg, cfg)
                            seconds = time.monotonic() - start
                            files = find_latest_checkpoint(location)[1]["files"]
                            run = {"round": round_ + 1, "fit_seconds": round(seconds, 2),
                                   "checkpoint_mb": round(sum(files.values()) / 1e6, 2),
                                   "stall_seconds": [e["checkpoint_stall_seconds"] for e in history[:-1]],
                                   "write_seconds": [e["checkpoint_write_seconds"] for e in history],
                                   "epoch_seconds": [e["seconds"] for e in history],
                                   "examples_per_second": round(steady_examples_per_second(history), 1)}
                            runs.setdefault(f"{store}, {mode}", []).append(run)
                            print(f"2. round {round_ + 1}, {store}, {mode}: stall {median(run['stall_seconds'])} s a "
                                  f"checkpoint ({run['checkpoint_mb']} MB), fit {seconds:.1f} s", flush=True)
            finally:
                ray.shutdown()
        finally:
            undo()

    summary = {}
    for name, done in runs.items():
        summary[name] = {
            "checkpoint_mb": done[0]["checkpoint_mb"],
            "stall_seconds_median": median([s for r in done for s in r["stall_seconds"]]),
            "write_seconds_median": median([s for r in done for s in r["write_seconds"]]),
            "epoch_seconds_median": median([s for r in done for s in r["epoch_seconds"][1:]]),
            "fit_seconds_by_round": [r["fit_seconds"] for r in done],
            "fit_seconds_median": median([r["fit_seconds"] for r in done]),
        }
    for store in ("S3 (moto, local)", "local disk"):
        sync, async_ = summary[f"{store}, sync"], summary[f"{store}, async"]
        summary[f"{store}: sync / async stall"] = round(sync["stall_seconds_median"] / async_["stall_seconds_median"], 2)
    print(f"\n1. a checkpoint's write in each of 2 Ray workers (MultiWorkerMirroredStrategy), ms, median of "
          f"{args.write_repeats}: " + ", ".join(f"{name} {row['median_ms']}" for name, row in written.items()
                                               if isinstance(row, dict)) + f"; whole / towers {written['whole / towers']}")
    print(f"\n2. 2 Ray workers, default preset, {title}, {args.epochs} epochs, a checkpoint every epoch; "
          f"{args.rounds} rounds (medians)")
    print(f"{'store, upload':28}{'checkpoint MB':>15}{'stall s':>10}{'write s':>10}{'epoch s':>10}{'fit s':>8}"
          "  fit s by round")
    for name, row in summary.items():
        if isinstance(row, dict):
            print(f"{name:28}{row['checkpoint_mb']:>15.2f}{row['stall_seconds_median']:>10.3f}"
                  f"{row['write_seconds_median']:>10.3f}{row['epoch_seconds_median']:>10.2f}"
                  f"{row['fit_seconds_median']:>8.1f}  {row['fit_seconds_by_round']}")
    for name, row in summary.items():
        if not isinstance(row, dict):
            print(f"{name}: {row}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(), "data": title,
                               "epochs": args.epochs, "rounds": args.rounds, "writes": written, "summary": summary,
                               "runs": runs},
                              indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
