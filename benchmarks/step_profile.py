"""Where one training step of the default preset goes, part by part, and how far it is from the arithmetic floor.

    python benchmarks/step_profile.py [--movielens ../shared/data/ml-100k] [--synthetic 1000000]

On the train split of MovieLens 100K (and, with --synthetic N, of N interactions
of MovieLens 20M's shape) with the `quality` preset's model and batch, one
process, it times, in one run and side by side:

- fit          `model.fit` on the real input pipeline, as `scaleout train` runs it (median of epochs 2+)
- fit, batches in memory   the same fit on the same batches held in memory: without the input pipeline
- train_step   the model's own train_step in a tf.function loop over those batches: without Keras' fit loop
- forward + backward       the loss and its gradients, no optimizer
- forward      the loss only
- lookups      both towers' StringLookup + Embedding, forward
- logits       the B x B logits, softmax cross-entropy and their gradients on random embeddings, with
               TFRS's dense B x B labels and as scaleout computes it (logsumexp less the diagonal), and
               at one of 2 Ray workers' share under global negatives: B/2 queries against B candidates
- pipeline     the input pipeline alone (Parquet -> shuffled string batches), no model

and the matrix-multiply rate of this machine (a large fp32 GEMM, and the logits' own
[B x d] x [d x B] shape). The floor of a step is its arithmetic: the B x B logits
take 2·B·d FLOPs per example forward and 4·B·d backward (two more products of the
same size); the lookups, the softmax and Adagrad on the touched rows add O(d) and
O(B) per example, negligible beside them. floor examples/s = GEMM rate / (6·B·d);
the report gives the measured examples/s over it.

--threads 1 runs it all on one thread (TensorFlow's intra- and inter-op
pools), as one Ray worker of 1 CPU does (scaleout.train.ray_backend): set
beside the default run, it shows what a worker's step computes.

Prints the table and writes benchmarks/results/step_profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import scaleout
from scaleout.bench.measure import median_seconds, steady_examples_per_second
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare
from scaleout.train.presets import configs

RESULTS = Path(__file__).parent / "results" / "step_profile.json"
ML20M_SHAPE = {"synthetic_users": 138_493, "synthetic_items": 26_744}


def gemm_rate(tf, m: int, k: int, n: int, repeats: int = 20) -> float:
    """FLOP/s of an fp32 [m x k] x [k x n] product on this machine (TensorFlow's kernel, all cores)."""
    a, b = tf.random.normal([m, k]), tf.random.normal([k, n])
    calls = max(1, int(2e9 // (2 * m * k * n)))  # about 2 GFLOP a timed call

    @tf.function
    def run():
        out = tf.zeros([m, n])
        for _ in tf.range(calls):
            out += tf.matmul(a, b)
        return out

    return 2.0 * m * k * n * calls / median_seconds(lambda: run().numpy(), repeats)


def profile(dataset, epochs: int, repeats: int) -> dict:
    from scaleout.tfenv import tf
    from scaleout.data.tfdata import parquet_dataset
    from scaleout.train.local import fit
    from scaleout.train.model import build_for_dataset
    from scaleout.train.towers import query_embeddings

    model_cfg, train_cfg = configs("quality", train={"epochs": epochs})
    batch, dim = train_cfg.batch_size, model_cfg.embedding_dim
    rows = dataset.counts["train"]
    steps = rows // batch  # full batches only below
    model, history = fit(dataset, model_cfg, train_cfg)
    figures = {"fit": steady_examples_per_second(history)}

    def pipeline():
        return parquet_dataset(dataset.files("train"), model.columns, batch, train_cfg.shuffle_buffer,
                               seed=train_cfg.seed, repeat=True)

    batches = [next(it) for it in [iter(pipeline())] for _ in range(steps)]
    stacked = {c: tf.stack([b[c] for b in batches]) for c in model.columns}

    def pass_over_pipeline():
        for _ in pipeline().take(steps):
            pass

    figures["pipeline"] = steps * batch / median_seconds(pass_over_pipeline, max(1, repeats // 2))

    in_memory = build_for_dataset(model_cfg, dataset, steps_per_execution=train_cfg.steps_per_execution)
    data = tf.data.Dataset.from_tensor_slices(stacked).repeat()
    seen = []

    class Epochs(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seen.append({"examples_per_second": steps * batch / (time.perf_counter() - self.start)})

    in_memory.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Epochs()])
    figures["fit, batches in memory"] = steady_examples_per_second(seen)

    def total(values) -> tf.Tensor:
        """A scalar every value feeds, so that nothing the loop computes is pruned as unused."""
        flat = [v.values if isinstance(v, tf.IndexedSlices) else v for v in tf.nest.flatten(values)]
        return tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in flat])

    def loop(step):
        @tf.function
        def run():
            out = tf.constant(0.0)
            for i in tf.range(steps):
                out += total(step({c: stacked[c][i] for c in model.columns}))
            return out
        return lambda: run().numpy()

    def forward_backward(features):
        with tf.GradientTape() as tape:
            loss = in_memory.compute_loss(features, training=True)
        return tape.gradient(loss, in_memory.trainable_variables)

    def lookups(features):
        return (query_embeddings(in_memory.query_tower, features["user_id"], None, training=True),
                in_memory.candidate_tower(features["movie_id"]))

    def train_step(features):
        logs = in_memory.train_step(features)
        return logs["loss"]

    for name, step in (("train_step", train_step), ("forward + backward", forward_backward),
                       ("forward", lambda f: in_memory.compute_loss(f, training=True)), ("lookups", lookups)):
        figures[name] = steps * batch / median_seconds(loop(step), repeats)

    q, c = tf.Variable(tf.random.normal([batch, dim])), tf.Variable(tf.random.normal([batch, dim]))
    cross_entropy = tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum")

    def logits_loop(loss_of):
        @tf.function
        def run():
            out = tf.constant(0.0)
            for _ in tf.range(steps):
                with tf.GradientTape() as tape:
                    loss = loss_of(tf.matmul(q, c, transpose_b=True))
                out += total([loss, tape.gradient(loss, [q, c])])
            return out
        return lambda: run().numpy()

    # As tfrs.tasks.Retrieval computes it: a dense [B x B] identity of labels and Keras' categorical
    # cross-entropy; as scaleout's in_batch_softmax does: each row's logsumexp less its diagonal.
    figures["logits (TFRS: dense B x B labels)"] = steps * batch / median_seconds(
        logits_loop(lambda scores: cross_entropy(tf.eye(batch), scores)), repeats)
    figures["logits (scaleout: logsumexp - diagonal)"] = steps * batch / median_seconds(logits_loop(
        lambda scores: tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - tf.linalg.diag_part(scores))), repeats)
    # What one of 2 Ray workers computes under global negatives: its half of the queries against the whole
    # global batch's candidates, [B/2 x B] (examples/s of the worker's own B/2 queries).
    q = tf.Variable(tf.random.normal([batch // 2, dim]))
    figures["logits, a 2-worker share ([B/2 x B])"] = steps * (batch // 2) / median_seconds(logits_loop(
        lambda scores: tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - tf.linalg.diag_part(scores))), repeats)
    return {"rows": rows, "batch": batch, "dim": dim, "steps_per_execution": train_cfg.steps_per_execution,
            "epochs": epochs, "fit_epochs": [round(e["examples_per_second"], 1) for e in history],
            "examples_per_second": {k: round(v, 1) for k, v in figures.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--synthetic", type=int, default=0,
                        help="also profile on this many interactions of MovieLens 20M's shape (0: no)")
    parser.add_argument("--epochs", type=int, default=5, help="of each fit (the figure: median of epochs 2+)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (0: its default, every CPU); 1 is what one "
                             "Ray worker of 1 CPU runs with")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default {RESULTS} (with --threads N: step_profile_threads-N.json beside it)")
    args = parser.parse_args()
    out = args.out or (RESULTS.with_name(f"step_profile_threads-{args.threads}.json") if args.threads else RESULTS)

    from scaleout.tfenv import tf

    if args.threads:  # before TensorFlow starts its pools
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    results = {"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(), "threads": args.threads or "all",
               "cpu": platform.processor() or platform.machine(), "data": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"ml-100k": DataConfig(source="movielens", path=args.movielens)}
        if args.synthetic:
            sets[f"synthetic {args.synthetic:,} (ML-20M shape)"] = DataConfig(
                source="synthetic", synthetic_interactions=args.synthetic, **ML20M_SHAPE)
        for name, cfg in sets.items():
            dataset = prepare(cfg, Path(tmp) / name.split()[0])
            results["data"][name] = profile(dataset, args.epochs, args.repeats)
    first = next(iter(results["data"].values()))
    batch, dim = first["batch"], first["dim"]
    results["gemm_flops_per_second"] = {"2048 x 2048 x 2048": round(gemm_rate(tf, 2048, 2048, 2048)),
                                        f"{batch} x {dim} x {batch} (logits)": round(gemm_rate(tf, batch, dim, batch))}
    peak = max(results["gemm_flops_per_second"].values())
    flops = 6 * batch * dim
    results["floor"] = {"flops_per_example": flops, "examples_per_second": round(peak / flops, 1),
                        "rule": "6·B·d FLOPs per example (the B x B logits forward and backward) over the "
                                "largest GEMM rate measured"}
    threads = f"{args.threads} thread(s)" if args.threads else "all threads"
    print(f"\none training step of the quality preset (batch {batch}, dim {dim}), one process, "
          f"{results['cpus']} CPUs ({results['cpu']}), {threads}; examples/s, median")
    names = list(first["examples_per_second"])
    print(f"{'':42}" + "".join(f"{n[:34]:>36}" for n in results["data"]))
    for part in names:
        print(f"{part:42}" + "".join(f"{d['examples_per_second'][part]:>36,.0f}" for d in results["data"].values()))
    for shape, rate in results["gemm_flops_per_second"].items():
        print(f"GEMM {shape}: {rate / 1e9:.1f} GFLOP/s")
    print(f"floor: {flops:,} FLOPs per example -> {results['floor']['examples_per_second']:,.0f} examples/s; "
          + "; ".join(f"{n}: fit at {d['examples_per_second']['fit'] / results['floor']['examples_per_second']:.2f} "
                      "of it" for n, d in results["data"].items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
