"""Examples/s at 4, 8 and 16 Ray workers, projected from what a step measured here: its compute and its one all-reduce.

    python benchmarks/ray_scaling.py                 # first: the steps of 1 and 2 workers
    python benchmarks/ray_projection.py              # then: the all-reduce at 2-4 workers, the fit, the projection

1. **The all-reduce, measured**: Ray Train workers (1 CPU each; a local Ray
   instance advertising as many logical CPUs as the most workers) time one
   all-reduce of each size alone, over the transport the ray_scaling.py run's
   2 workers used (the socket ring by default, or TensorFlow's collective in
   their MultiWorkerMirroredStrategy), at 2, 3 and 4 workers.
2. **The ring model, fitted** (scaleout.bench.collectives): seconds = 2 (N - 1)
   alpha + 2 (N - 1) / N x bytes / beta, alpha the cost of one message and beta
   the bytes a second of one; its largest error against the timings is printed.
3. **The projection**: for each setting of the last ray_scaling.py run (the
   default preset's batch of 1,024 and the tutorial's 8,192), a worker's
   compute from the 1-worker step (all the batch's queries) and the 2-worker
   step less the model's all-reduce (half the queries each), a straight line in
   the worker's share of queries; the step's bytes as the run traced them (the
   same at any worker count: the candidate table's gradient travels as the
   global batch's rows, the user table's as each worker's share of them); then
   examples/s = batch / (compute + all-reduce) at 1, 2, 4, 8 and 16 workers.

Writes benchmarks/results/ray_projection.json. The workers of cluster.yaml take
1 CPU each, up to 16 on one m6i.4xlarge: up to 16 workers, their all-reduce is
between processes of one host as here. Across hosts each message also pays the
network's latency (--network-latency-us, an assumption: nothing here measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import scaleout
from scaleout.bench.collectives import fit_ring, project, ring_seconds, time_all_reduce
from scaleout.tfenv import RUNTIME_ENV_VARS

RESULTS = Path(__file__).parent / "results"


def measure(workers: list[int], elements: list[int], repeats: int, op: str) -> list[tuple[int, float, float]]:
    """(workers, bytes, seconds) of one float32 all-reduce of each size at each worker count, over the transport
    of ``op`` (as the ray_scaling.py run's 2 workers traced it: TensorFlow's collective, or the socket ring's)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    points = []
    ray.init(num_cpus=max(workers), runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in workers:
                out = Path(tmp) / f"all-reduce-{n}.json"
                TensorflowTrainer(
                    time_all_reduce,
                    train_loop_config={"collectives": [{"op": op, "dtype": "float32", "elements": e}
                                                       for e in elements],
                                       "repeats": repeats, "out": str(out), "pin": True},
                    scaling_config=ScalingConfig(num_workers=n, resources_per_worker={"CPU": 1}),
                    run_config=RunConfig(name=f"all-reduce-{n}", storage_path=str(Path(tmp) / "runs")),
                ).fit()
                for e, seconds in zip(elements, json.loads(out.read_text())["seconds"]):
                    points.append((n, 4 * e, seconds))
                    print(f"{n} workers, all-reduce of {4 * e / 1024:,.0f} KiB: {1000 * seconds:.2f} ms", flush=True)
    finally:
        ray.shutdown()
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scaling", type=Path, default=RESULTS / "ray_scaling.json",
                        help="ray_scaling.py's result to take the steps from (default %(default)s)")
    parser.add_argument("--measure-workers", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--elements", type=int, nargs="+", default=[2048, 32768, 65536, 131072, 262144],
                        help="float32 elements of the all-reduces timed (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--project", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--network-latency-us", type=float, default=100.0,
                        help="added to each message across hosts (assumed, default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_projection.json")
    args = parser.parse_args()
    scaling = json.loads(args.scaling.read_text())
    first = next(iter(scaling["settings"].values()))["runs"]["2 Ray workers"]
    op = first["collectives_per_step"][0]["op"]  # the step's all-reduce as that run's workers traced it
    points = measure(args.measure_workers, args.elements, args.repeats, op)
    ring = fit_ring(points)
    alpha, beta = ring["alpha_s"], ring["beta_bytes_per_s"]
    print(f"\nring all-reduce ({op}): alpha {1000 * alpha:.2f} ms a message, beta {beta / 1e6:,.0f} MB/s; largest "
          f"error of the fit {100 * ring['max_relative_error']:.0f}% ({len(points)} timings, {args.measure_workers} "
          "workers)")
    settings = {}
    for label, setting in scaling["settings"].items():
        runs = setting["runs"]
        batch, one, two = setting["batch_size"], runs["1 Ray worker"], runs["2 Ray workers"]
        nbytes = sum(c["bytes"] or 0 for c in two["collectives_per_step"])
        two_compute = two["step_ms"] - 1000 * ring_seconds(2, nbytes, alpha, beta)
        rows = {}
        for where, extra in (("one host", 0.0), ("across hosts", args.network_latency_us / 1e6)):
            rows[where] = project(batch, nbytes, one["step_ms"], two_compute, alpha + extra, beta, args.project)
        settings[label] = {"batch_size": batch, "bytes_per_step": nbytes, "one_worker_step_ms": one["step_ms"],
                           "two_workers_step_ms": two["step_ms"], "two_workers_compute_ms": round(two_compute, 2),
                           "projection": rows}
        print(f"\n{label} (global batch {batch:,}; a step sends {nbytes / 1024:,.0f} KiB; measured: 1 worker "
              f"{one['step_ms']:.1f} ms a step, 2 workers {two['step_ms']:.1f} ms)")
        print(f"{'workers':>8}{'compute ms':>12}{'all-reduce ms':>15}{'examples/s':>12}"
              f"{'across hosts: all-reduce ms':>30}{'examples/s':>12}")
        for here, there in zip(rows["one host"], rows["across hosts"]):
            print(f"{here['workers']:>8}{here['compute_ms']:>12.1f}{here['collective_ms']:>15.1f}"
                  f"{here['examples_per_second']:>12,}{there['collective_ms']:>30.1f}"
                  f"{there['examples_per_second']:>12,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "scaleout_version": scaleout.__version__, "cpus": os.cpu_count(), "scaling_source": str(args.scaling.name),
        "all_reduce_op": op,
        "timings": [{"workers": n, "bytes": b, "seconds": s} for n, b, s in points], "ring": ring,
        "network_latency_us_assumed": args.network_latency_us, "settings": settings}, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
