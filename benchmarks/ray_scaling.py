"""Ray Train scaling: 1 worker against 2 workers (1 CPU each) on the same data and global batch.

    python benchmarks/ray_scaling.py --movielens ../shared/data/ml-100k

Prepares MovieLens 100K, starts a local Ray instance with 2 CPUs, and trains
the tutorial's model (global batch 8192, 3 epochs) with 1 and then 2 workers
through scaleout's Ray backend. Prints steady-state training examples/s (the
epochs after the first, which also traces the graph), the scaling efficiency
2-worker / (2 x 1-worker), and an estimate of the share of a 2-worker step spent
in cross-replica communication: the collectives a step runs (the all-gather of
candidate embeddings, its gradient, the all-reduce of both embedding gradients)
timed alone at the same sizes. Writes benchmarks/results/ray_scaling.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import scaleout
from scaleout.config import DataConfig, ModelConfig, TrainConfig
from scaleout.data.prepare import prepare
from scaleout.rundir import RunDir
from scaleout.tfenv import RUNTIME_ENV_VARS

RESULTS = Path(__file__).parent / "results" / "ray_scaling.json"


def collective_seconds(config: dict) -> None:
    """Per-worker: seconds for one step's collectives, timed alone (reported through Ray Train)."""
    import ray.train

    import scaleout  # noqa: F401
    from scaleout.tfenv import import_tensorflow

    tf = import_tensorflow()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rows, dim, repeats = config["rows"], config["dim"], config["repeats"]

    @tf.function
    def step_collectives():
        def on_replica():
            context = tf.distribute.get_replica_context()
            x = tf.random.normal([rows, dim])
            ids = tf.range(rows)
            # forward all-gather, its gradient, and the two sparse embedding-gradient all-reduces
            # (IndexedSlices are all-reduced by gathering values and indices)
            out = [context.all_gather(x, axis=0) for _ in range(4)]
            out += [context.all_gather(ids, axis=0) for _ in range(2)]
            return [tf.reduce_sum(tf.cast(o, tf.float32)) for o in out]
        return strategy.run(on_replica)

    step_collectives()  # trace and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        step_collectives()
    seconds = (time.perf_counter() - start) / repeats
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["out"]).write_text(json.dumps({"seconds_per_step": seconds}))
    ray.train.report({"seconds_per_step": seconds})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from scaleout.train.ray_backend import fit_ray

    ray.init(num_cpus=2, runtime_env={"env_vars": RUNTIME_ENV_VARS}, include_dashboard=False)
    model_cfg = ModelConfig()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare(DataConfig(source="movielens", path=args.movielens), Path(tmp) / "data")
        for workers in (1, 2):
            run = RunDir(Path(tmp))
            train_cfg = TrainConfig(backend="ray", workers=workers, cpus_per_worker=1, epochs=args.epochs,
                                    batch_size=args.batch_size, storage=str(Path(tmp) / f"ckpt-{workers}"))
            start = time.monotonic()
            _, history, _ = fit_ray(run, model_cfg, train_cfg)
            steady = history[1:] or history
            runs.append({"workers": workers, "wall_seconds": round(time.monotonic() - start, 1),
                         "epoch_seconds": [e["seconds"] for e in history],
                         "examples_per_second": round(sum(e["examples_per_second"] for e in steady) / len(steady), 1)})
        # Ray Train V2 keeps metrics only with checkpoints: rank 0 writes its timing to a file.
        timing = Path(tmp) / "collectives.json"
        TensorflowTrainer(
            collective_seconds,
            train_loop_config={"rows": args.batch_size // 2, "dim": model_cfg.embedding_dim, "repeats": 30,
                               "out": str(timing)},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name="collectives", storage_path=str(Path(tmp) / "comm")),
        ).fit()
        comm_seconds = json.loads(timing.read_text())["seconds_per_step"]
    ray.shutdown()

    one, two = runs
    efficiency = two["examples_per_second"] / (2 * one["examples_per_second"])
    step_seconds = args.batch_size / two["examples_per_second"]
    print(f"\nRay Train on MovieLens 100K: global batch {args.batch_size}, {args.epochs} epochs, 1 CPU per worker, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':34}{'1 worker':>12}{'2 workers':>12}")
    print(f"{'examples/s (after epoch 1)':34}{one['examples_per_second']:>12,.0f}{two['examples_per_second']:>12,.0f}")
    print(f"{'seconds per epoch':34}{one['epoch_seconds'][-1]:>12.1f}{two['epoch_seconds'][-1]:>12.1f}")
    print(f"scaling efficiency 2 / (2 x 1): {efficiency:.2f}")
    print(f"communication: {comm_seconds * 1000:.1f} ms of a {step_seconds * 1000:.0f} ms step "
          f"({comm_seconds / step_seconds:.1%}, collectives timed alone at the step's sizes)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "scaleout_version": scaleout.__version__, "cpus": os.cpu_count(), "batch_size": args.batch_size,
        "epochs": args.epochs, "model": dataclasses.asdict(model_cfg), "runs": runs,
        "scaling_efficiency": round(efficiency, 3),
        "communication_seconds_per_step": round(comm_seconds, 4),
        "communication_share_of_step": round(comm_seconds / step_seconds, 3),
    }, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
