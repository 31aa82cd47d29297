"""Ray Train scaling: one process, 1 Ray worker and 2 Ray workers on the same data and global batch, side by side.

    python benchmarks/ray_scaling.py --movielens ../shared/data/ml-100k
    python benchmarks/ray_scaling.py --synthetic 2M --epochs 3   # MovieLens 20M's shape, larger tables

Prepares MovieLens 100K, starts a local Ray instance with 2 CPUs, and trains at
the default preset (`quality`: batch 1,024) and at the tutorial's batch of 8,192:
in this process (all CPUs), then on 1 and 2 Ray workers (1 CPU each) through
scaleout's Ray backend, with the steps per tf.function call of the training
configuration (and, for 2 workers at the default preset, with one step per call:
what the per-call overhead costs; and, in every round beside the pinned ones,
with the workers left to the OS scheduler rather than each on a core of its
own, as scaleout.train.cpus pins them where the Ray node owns every CPU). For
each it prints steady-state examples/s (median of the epochs after the first,
which also traces the graph), the time of a step, and where a 2-worker step's
time goes:

- collectives: what one step sends between workers, as the workers traced it
  (count, bytes), each timed alone at its size in 2 workers placed as the
  2 that trained (each on a core of its own where they were; left to the
  scheduler, the same all-reduce takes longer: docs/ray-step-costs.md, "The
  all-reduce timed where training runs it");
- input: one batch read by the worker's input pipeline, timed alone (it runs
  ahead of the step, so it only costs where it is slower than the step);
- compute and framework: the rest of the step;
- checkpoint: the per-epoch checkpoint's write, outside the epoch's time.

Ratios: 2 workers / one process (the goal is at least 0.8 at the default
preset) and 2 workers / (2 x 1 worker) (scaling efficiency), each also for
2 workers whose all-reduce is in the other dtype than the preset's (the
quality preset's is bfloat16: half the bytes of float32, the gradients
rounded to 8 significant bits; --allreduce-dtype), and for 2 workers whose
all-reduce travels over the other transport (the default is scaleout's
socket ring, the other TensorFlow's collective; --allreduce-transport), the
latter two also against the round's 2 workers as the preset runs them. This machine's
speed drifts between minutes (by half within one run), so the runs go in
--rounds: one process (without Ray's processes beside it, as a user's
`scaleout train` runs), then Ray (each round starting its Ray runs one setting
further on, so that none is always first); one process once more at the end. Each
round's 2-worker figure is set against the one-process runs just before and
after it, and against that round's 1 worker (scaling efficiency by round);
the medians of the rounds' ratios are the figures to quote; the pooled
epochs' ratios are printed beside them. Writes
benchmarks/results/ray_scaling.json.

With --nodes 2 the Ray runs go to a cluster of two Ray nodes of one CPU each
(`ray start --head` and `ray start --address`, the tests' tests/raycluster.py,
the disk shared), started for each round and stopped after it: each worker of
a 2-worker run on its own node, so the step's collectives cross nodes as on a
cluster (here over this host's loopback, not a network). --nodes 1 2 runs
both in every round, one node first, against the same one-process runs.
Writes ray_scaling_2nodes.json beside the default results.

With --synthetic N the data is the synthetic source at MovieLens 20M's shape
(its users per interaction, 26,744 items), the default preset only: tables
of tens of thousands of rows, whose gradients are what a step sends. Writes
benchmarks/results/ray_scaling_synthetic-N.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import scaleout
from scale import training_data  # MovieLens 100K or synthetic at MovieLens 20M's shape (benchmarks/scale.py)
from scaleout.bench.collectives import time_all_reduce
from scaleout.bench.measure import steady_examples_per_second
from scaleout.config import ALLREDUCE_DTYPES, ALLREDUCE_TRANSPORTS
from scaleout.data.prepare import prepare
from scaleout.rundir import RunDir
from scaleout.tfenv import RUNTIME_ENV_VARS
from scaleout.train.presets import configs

RESULTS = Path(__file__).parent / "results" / "ray_scaling.json"
TESTS = Path(__file__).parent.parent / "tests"  # tests/raycluster.py: real local Ray clusters
WHERE = {1: "", 2: " on 2 nodes"}  # after a Ray run's name: where its workers ran
EVERY_ROUND = ("1 Ray worker", "2 Ray workers", "2 Ray workers, not pinned",
               *(f"2 Ray workers, {d} all-reduce" for d in ALLREDUCE_DTYPES),
               *(f"2 Ray workers, {t} transport" for t in ALLREDUCE_TRANSPORTS))  # the rest: the first round's
SETTINGS = {"default preset": ("quality", {}), "tutorial batch": ("quality", {"batch_size": 8192})}


def the_other(of: tuple[str, str], this: str) -> str:
    """The setting run beside the preset's every round: the one of two (``of``: the all-reduce's dtypes, or its
    transports) that ``this`` is not."""
    (other,) = (d for d in of if d != this)
    return other


def variant_ratios(variant: list[float], ones: list[float], one_worker: list[float], two: list[float]) -> dict:
    """A 2-worker variant's examples/s by round against the one-process runs before and after it, against twice
    the round's 1 worker (scaling efficiency) and against the round's 2 workers as the preset runs them."""
    out = {"round_ratios": [round(v / statistics.mean(ones[r:r + 2]), 3) for r, v in enumerate(variant)],
           "scaling_efficiency_rounds": [round(v / (2 * w), 3) for v, w in zip(variant, one_worker)],
           "over_two_workers_rounds": [round(v / t, 3) for v, t in zip(variant, two)]}
    for key, of in (("median_round_ratio", "round_ratios"),
                    ("median_round_scaling_efficiency", "scaling_efficiency_rounds"),
                    ("median_over_two_workers", "over_two_workers_rounds")):
        out[key] = round(statistics.median(out[of]), 3)
    return out


def input_seconds_per_batch(dataset, columns, batch: int, batches: int = 200) -> float:
    """One batch of the training input pipeline (Parquet -> tf.data), read alone on one thread."""
    from scaleout.data.tfdata import parquet_dataset

    data = iter(parquet_dataset(dataset.files("train"), columns, batch, 100_000, seed=1, drop_remainder=True,
                                repeat=True))
    next(data)
    start = time.perf_counter()
    for _ in range(batches):
        next(data)
    return (time.perf_counter() - start) / batches


@contextlib.contextmanager
def ray_instance(nodes: int, token: str):
    """Ray for a round: this process's local instance of 2 CPUs, or a cluster of two 1-CPU nodes that
    authenticates with ``token`` (the driver's, set in the environment before ray was imported)."""
    import ray

    if nodes == 1:
        ray.init(num_cpus=2, runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
        try:
            yield
        finally:
            ray.shutdown()
        return
    if str(TESTS) not in sys.path:  # once, not once a round
        sys.path.insert(0, str(TESTS))
    from raycluster import two_node_cluster

    with two_node_cluster({}, own_disk=False, token=token) as (cluster, _):
        ray.init(address=cluster.address, runtime_env={"env_vars": RUNTIME_ENV_VARS})
        try:
            yield
        finally:
            ray.shutdown()


def driver_token(work: Path) -> str:
    """A token for --nodes 2's clusters, in this process's environment before it imports ray (Ray reads its
    authentication settings once, at import)."""
    token = secrets.token_hex(32)
    (work / "auth_token").write_text(token)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(work / "auth_token"))
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of one process then 1 and 2 Ray workers, one process once more at the end; "
                             "the first round also runs the step's breakdown (default %(default)s)")
    parser.add_argument("--steps-per-execution", type=int, default=None,
                        help="steps per tf.function call (default: the training configuration's)")
    parser.add_argument("--synthetic", default=None, metavar="N",
                        help="synthetic interactions at MovieLens 20M's shape (e.g. 2M) instead of MovieLens 100K")
    parser.add_argument("--nodes", type=int, nargs="+", choices=(1, 2), default=[1],
                        help="Ray on this process's instance (1), on two 1-CPU Ray nodes (2), or both in turn")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} (with --synthetic N: "
                                                               "ray_scaling_synthetic-N.json beside it; with "
                                                               "--nodes 2 or 1 2: ray_scaling_2nodes.json)")
    args = parser.parse_args()
    data_cfg, title = training_data(args.synthetic, args.movielens)
    if args.synthetic:
        settings = {"default preset": SETTINGS["default preset"]}
        out = args.out or RESULTS.with_name(f"ray_scaling_synthetic-{args.synthetic}.json")
    else:
        settings, out = SETTINGS, args.out or RESULTS
    if 2 in args.nodes:
        title += ", Ray on " + " and on ".join(("one node", "2 nodes of 1 CPU each")[n - 1] for n in args.nodes)
        out = args.out or out.with_name(out.stem + "_2nodes.json")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        token = driver_token(Path(tmp)) if 2 in args.nodes else ""
        from ray.train import RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer

        from scaleout.tfenv import tf
        from scaleout.train.local import fit
        from scaleout.train.ray_backend import fit_ray

        dataset = prepare(data_cfg, Path(tmp) / "data")
        plans = {}
        for label, (preset, train_over) in settings.items():
            spe = {"steps_per_execution": args.steps_per_execution} if args.steps_per_execution else {}
            model_cfg, train_cfg = configs(preset, train={"epochs": args.epochs, **train_over, **spe})
            variants = [("one process", "local", 1, {}), ("1 Ray worker", "ray", 1, {}),
                        ("2 Ray workers", "ray", 2, {})]
            if label == "default preset" and train_cfg.steps_per_execution != 1:
                variants += [("one process, 1 step a call", "local", 1, {"steps_per_execution": 1}),
                             ("2 Ray workers, 1 step a call", "ray", 2, {"steps_per_execution": 1})]
            if label == "default preset":  # every round, beside the pinned workers (scaleout.train.cpus)
                variants += [("2 Ray workers, not pinned", "ray", 2, {"pin_cpus": False})]
            # every round: the step's all-reduce in the other dtype, and over the other transport
            other = the_other(ALLREDUCE_DTYPES, train_cfg.allreduce_dtype)
            transport = the_other(ALLREDUCE_TRANSPORTS, train_cfg.allreduce_transport)
            variants += [(f"2 Ray workers, {other} all-reduce", "ray", 2, {"allreduce_dtype": other}),
                         (f"2 Ray workers, {transport} transport", "ray", 2, {"allreduce_transport": transport})]
            plans[label] = (model_cfg, train_cfg, variants)
            results[label] = {"batch_size": train_cfg.batch_size, "model": dataclasses.asdict(model_cfg),
                              "other_allreduce_dtype": other, "other_allreduce_transport": transport, "runs": {}}

        counter = itertools.count()  # every run checkpoints to a new place (a run refuses an earlier one's)

        def train(label, name, backend, workers, over):
            model_cfg, train_cfg = plans[label][:2]
            cfg = dataclasses.replace(train_cfg, backend=backend, workers=workers, cpus_per_worker=1, **over,
                                      storage=str(Path(tmp) / f"ckpt-{label}-{name}-{next(counter)}".replace(" ", "-")))
            start = time.monotonic()
            if backend == "local":
                model, history = fit(dataset, model_cfg, cfg)
            else:
                model, history, _ = fit_ray(RunDir(Path(tmp)), model_cfg, cfg)
            runs = results[label]["runs"]
            alone = steady_examples_per_second(history)  # this run's own figure (a round's ratio uses it)
            previous = runs.get(name, {})
            if previous:  # the same setting again: its epochs pooled with the earlier runs'
                history = previous["history"] + history[1:]
            rate = steady_examples_per_second(history)
            runs[name] = {"history": history, "per_run": previous.get("per_run", []) + [round(alone, 1)],
                "workers": workers, "steps_per_execution": cfg.steps_per_execution,
                "allreduce_dtype": cfg.allreduce_dtype, "allreduce_transport": cfg.allreduce_transport,
                "wall_seconds": round(time.monotonic() - start, 1), "epoch_seconds": [e["seconds"] for e in history],
                "examples_per_second": round(rate, 1), "step_ms": round(1000 * cfg.batch_size / rate, 2),
                "checkpoint_write_seconds": [e.get("checkpoint_write_seconds") for e in history],
                "collectives_per_step": model.step_collectives, "cpu_pinning": model.trained_pinning}
            for kept in ("collectives_per_step", "collectives_timed", "input_ms_per_batch"):  # round 1's breakdown
                if kept in previous:
                    runs[name][kept] = previous[kept]
            print(f"{label}, {name}: {alone:,.0f} examples/s (pooled with earlier runs of it: {rate:,.0f})", flush=True)

        # One process before Ray starts (a user's `scaleout train` runs without Ray's processes beside it), and
        # again after it stops, every round: this machine's speed drifts by a third over minutes (by half within
        # one run on 2026-11-30), so each round's 2-worker figure is set against the one-process runs just
        # before and just after it, and the rounds' ratios are what the script reports.
        def one_process():
            for label, (_, _, variants) in plans.items():
                for name, backend, workers, over in variants:
                    if backend == "local":
                        train(label, name, backend, workers, over)

        def breakdown(label, train_cfg, where):
            """The 2-worker step's collectives timed alone at their sizes, and the input's time for a batch."""
            two = results[label]["runs"]["2 Ray workers" + where]
            timing = Path(tmp) / f"collectives-{label.replace(' ', '-')}.json"
            TensorflowTrainer(
                time_all_reduce,
                train_loop_config={"collectives": two["collectives_per_step"], "repeats": 50, "out": str(timing),
                                   "pin": train_cfg.pin_cpus},  # placed as the 2 workers it explains
                scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                run_config=RunConfig(name="collectives", storage_path=str(Path(tmp) / "comm")),
            ).fit()
            timed = json.loads(timing.read_text())
            for collective, seconds in zip(two["collectives_per_step"], timed["seconds"]):
                collective["ms_alone"] = round(1000 * seconds, 2)
            two["collectives_timed"] = timed["pinning"]
            with tf.device("/cpu:0"):
                two["input_ms_per_batch"] = round(1000 * input_seconds_per_batch(
                    dataset, ("user_id", "movie_id"), train_cfg.batch_size // 2), 2)

        for round_ in range(args.rounds):
            one_process()
            for nodes in args.nodes:
                where = WHERE[nodes]
                with ray_instance(nodes, token):
                    for label, (_, train_cfg, variants) in plans.items():
                        ray_runs = [v for v in variants if v[1] == "ray" and (round_ == 0 or v[0] in EVERY_ROUND)]
                        # Each later round starts one variant further on, so none of them is always first (or
                        # always last) after Ray starts: an order effect does not pass for a setting's.
                        shift = round_ % len(ray_runs)
                        for name, backend, workers, over in ray_runs[shift:] + ray_runs[:shift]:
                            train(label, name + where, backend, workers, over)
                        if round_ == 0:
                            breakdown(label, train_cfg, where)
        one_process()
        for label, result in results.items():
            runs = result["runs"]
            ones = runs["one process"]["per_run"]
            for nodes in args.nodes:
                two, one_worker = runs["2 Ray workers" + WHERE[nodes]], runs["1 Ray worker" + WHERE[nodes]]
                rounds = [{"one_process_before": ones[r], "two_ray_workers": t, "one_process_after": ones[r + 1],
                           "ratio": round(t / statistics.mean(ones[r:r + 2]), 3)} for r, t in enumerate(two["per_run"])]
                ratios = {"two_workers_over_one_process": round(
                              two["examples_per_second"] / runs["one process"]["examples_per_second"], 3),
                          "rounds": rounds,
                          "median_round_ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
                          "scaling_efficiency": round(
                              two["examples_per_second"] / (2 * one_worker["examples_per_second"]), 3)}
                # Each round's 2 workers against that round's 1 worker (run just before them, in the same Ray).
                by_round = [round(t / (2 * w), 3) for t, w in zip(two["per_run"], one_worker["per_run"])]
                ratios["scaling_efficiency_rounds"] = by_round
                ratios["median_round_scaling_efficiency"] = round(statistics.median(by_round), 3)
                unpinned = runs.get("2 Ray workers, not pinned" + WHERE[nodes])
                if unpinned:  # the same rounds, the workers left to the OS scheduler
                    against = [t / u for t, u in zip(two["per_run"], unpinned["per_run"])]
                    ratios["pinned_over_not_pinned"] = {"rounds": [round(r, 3) for r in against],
                                                        "median": round(statistics.median(against), 3)}
                    ratios["median_round_ratio_not_pinned"] = round(statistics.median(
                        u / statistics.mean(ones[r:r + 2]) for r, u in enumerate(unpinned["per_run"])), 3)
                other, transport = result["other_allreduce_dtype"], result["other_allreduce_transport"]
                # The same rounds with the other dtype's all-reduce, and over the other transport: each against
                # one process and 2 x 1 worker, and against the 2 workers as above
                for key, name in ((f"{other} all-reduce", f"2 Ray workers, {other} all-reduce"),
                                  (f"{transport} transport", f"2 Ray workers, {transport} transport")):
                    variant = runs.get(name + WHERE[nodes])
                    if variant:
                        ratios[key] = variant_ratios(variant["per_run"], ones, one_worker["per_run"], two["per_run"])
                result.setdefault("by_nodes", {})[str(nodes)] = ratios
                if nodes == args.nodes[0]:  # the top-level figures: the first placement's (one node by default)
                    result.update(ratios)

    print(f"\nRay Train on {title}, {os.cpu_count()} CPUs: one process uses them all, each Ray worker 1; "
          f"{args.epochs} epochs, median examples/s of epochs 2+")
    for label, result in results.items():
        runs = result["runs"]
        print(f"\n{label} (global batch {result['batch_size']:,})")
        print(f"{'':42}{'examples/s':>12}{'step ms':>10}{'steps/call':>12}{'collectives':>16}{'checkpoint s':>14}")
        for name, run in runs.items():
            comm = run["collectives_per_step"]
            sizes = f"{len(comm)} ({sum(c['bytes'] or 0 for c in comm) / 1024:,.0f} KiB)" if comm else "-"
            ckpt = [s for s in run["checkpoint_write_seconds"] if s is not None]
            print(f"{name:42}{run['examples_per_second']:>12,.0f}{run['step_ms']:>10.1f}"
                  f"{run['steps_per_execution']:>12}{sizes:>16}"
                  f"{(f'{statistics.median(ckpt):.2f}' if ckpt else '-'):>14}")
        for nodes in args.nodes:
            where, ratios = WHERE[nodes], result["by_nodes"][str(nodes)]
            two = runs["2 Ray workers" + where]
            comm_ms = sum(c["ms_alone"] for c in two["collectives_per_step"])
            print(f"2-worker step{where} of {two['step_ms']:.1f} ms: collectives {comm_ms:.1f} ms ("
                  + ", ".join(f"{c['op']} {c['bytes'] / 1024:,.0f} KiB {c['ms_alone']:.1f} ms"
                              for c in two["collectives_per_step"])
                  + f"; timed by {two['collectives_timed']}), compute and framework "
                  f"{two['step_ms'] - comm_ms:.1f} ms; input alone "
                  f"{two['input_ms_per_batch']:.1f} ms a batch (read ahead of the step)")
            print(f"each round's 2 workers{where} / the one-process runs just before and after it: "
                  + ", ".join(f"{r['two_ray_workers']:,.0f} / ({r['one_process_before']:,.0f}, "
                              f"{r['one_process_after']:,.0f}) = {r['ratio']:.2f}" for r in ratios["rounds"])
                  + f"; median {ratios['median_round_ratio']:.3f}")
            print(f"2 workers{where}: {two['cpu_pinning']}")
            if "pinned_over_not_pinned" in ratios:
                pinned = ratios["pinned_over_not_pinned"]
                print(f"2 workers{where} as above / not pinned, each round: "
                      + ", ".join(f"{r:.2f}" for r in pinned["rounds"]) + f"; median {pinned['median']:.2f} "
                      f"(not pinned / one process, median of rounds: {ratios['median_round_ratio_not_pinned']:.2f})")
            other, transport = result["other_allreduce_dtype"], result["other_allreduce_transport"]
            for key, what in ((f"{other} all-reduce", f"with a {other} all-reduce (the preset's: {two['allreduce_dtype']})"),
                              (f"{transport} transport", f"with the all-reduce over the {transport} transport (the "
                                                         f"preset's: {two['allreduce_transport']})")):
                if key in ratios:
                    half = ratios[key]
                    print(f"2 workers{where} {what}, each round / one process: "
                          + ", ".join(f"{r:.2f}" for r in half["round_ratios"])
                          + f"; median {half['median_round_ratio']:.3f}; scaling efficiency by round "
                          + ", ".join(f"{e:.2f}" for e in half["scaling_efficiency_rounds"])
                          + f": median {half['median_round_scaling_efficiency']:.3f}; / the 2 workers above, by "
                          "round " + ", ".join(f"{e:.2f}" for e in half["over_two_workers_rounds"])
                          + f": median {half['median_over_two_workers']:.3f}")
            print(f"2 workers{where} / one process (pooled epochs): {ratios['two_workers_over_one_process']:.2f}   "
                  f"scaling efficiency 2 / (2 x 1 worker): {ratios['scaling_efficiency']:.2f} pooled; by round "
                  + ", ".join(f"{e:.2f}" for e in ratios["scaling_efficiency_rounds"])
                  + f": median {ratios['median_round_scaling_efficiency']:.3f}")
    for result in results.values():  # each epoch's examples/s (pooled runs: both), not every logged value
        for run in result["runs"].values():
            run["examples_per_second_by_epoch"] = [e["examples_per_second"] for e in run.pop("history")]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(), "data": title,
                               "ray_nodes": args.nodes,
                               "epochs": args.epochs, "settings": results}, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
