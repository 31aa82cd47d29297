"""The logits' products at the default preset's shapes, the candidates' gradient computed both ways, side by side.

    python benchmarks/logits_gradient.py [--dim 128] [--out ...]

A training step's logits are ``query @ candidate^T`` ([queries x dim] x
[candidates x dim]); their backward pass takes two more products of the same
size. TensorFlow's gradient for the candidates reads the [queries x candidates]
upstream gradient transposed (``matmul(upstream, query, transpose_a=True)``);
scaleout's ``dot_scores`` (scaleout/train/logits.py) computes the same numbers
as ``transpose(matmul(query, upstream, transpose_a=True))``. For the default
preset's batch (1,024 x 1,024; dim 32, the preset's until 2026-12-03, or ``--dim``) and one of 2 Ray workers'
share (512 x 1,024), on one thread (a Ray worker of 1 CPU) and on two (one process here),
each in a fresh process, it times: the forward product, the queries' gradient,
the candidates' gradient both ways (and with the upstream transposed first),
and a whole loss-and-gradients step of the logits (scaleout's in-batch softmax
with logQ and accidental hits removed, its gradients for both sides) with
``dot_scores`` and with TensorFlow's own gradient. Median of 5 repeats of 50
calls each, after a warm-up. Writes benchmarks/results/logits_gradient.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "logits_gradient.json"
SHAPES = ((1024, 1024), (512, 1024))  # (queries, candidates): one process's batch, one of 2 workers' share
DIM = 32  # the dimensions these figures were first measured at (docs/one-process-step.md's table); --dim for others
CHILD_NAMES = {"tf gradient": "candidates' gradient, TensorFlow's: upstream^T @ query",
               "our gradient": "candidates' gradient, dot_scores: (query^T @ upstream)^T",
               "tf step": "loss and both gradients, TensorFlow's gradient",
               "our step": "loss and both gradients, dot_scores"}

CHILD = r"""
import json, sys
import scaleout
from scaleout.tfenv import tf
threads, dim, shapes = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
import contextlib
from scaleout.bench.measure import median_seconds
from scaleout.train.logits import tensorflow_gradient
from scaleout.train.logits import in_batch_softmax


def timed(fn):
    return round(median_seconds(fn, repeats=5, calls=50, warmup=5) * 1000, 3)


def step(tensorflows, *args):
    # The in-batch softmax's loss and both gradients, traced once: with TensorFlow's gradient of the logits
    # or with dot_scores's (the model's).
    def run(q, c, p, ids):
        with tf.GradientTape() as tape:
            tape.watch([q, c])
            loss = in_batch_softmax(q, c, candidate_sampling_probability=p, candidate_ids=ids)
        return tape.gradient(loss, [q, c])
    with tensorflow_gradient() if tensorflows else contextlib.nullcontext():
        return tf.function(run).get_concrete_function(*args)


out = {}
for queries, candidates in shapes:
    rng = tf.random.Generator.from_seed(0)
    q, c = rng.normal([queries, dim]), rng.normal([candidates, dim])
    upstream = rng.normal([queries, candidates])
    p = rng.uniform([candidates], 1e-4, 1e-2)
    ids = rng.uniform([candidates], 0, 1600, dtype=tf.int64)
    products = {
        "forward: query @ candidate^T": lambda: tf.matmul(q, c, transpose_b=True),
        "queries' gradient: upstream @ candidate": lambda: tf.matmul(upstream, c),
        "candidates' gradient, TensorFlow's: upstream^T @ query": lambda: tf.matmul(upstream, q, transpose_a=True),
        "candidates' gradient, dot_scores: (query^T @ upstream)^T":
            lambda: tf.transpose(tf.matmul(q, upstream, transpose_a=True)),
        "candidates' gradient, upstream transposed first": lambda: tf.matmul(tf.transpose(upstream), q),
    }
    row = {name: timed(tf.function(lambda f=f: tf.reduce_sum(f()))) for name, f in products.items()}
    theirs, ours = step(True, q, c, p, ids), step(False, q, c, p, ids)
    row["loss and both gradients, TensorFlow's gradient"] = timed(lambda: theirs(q, c, p, ids))
    row["loss and both gradients, dot_scores"] = timed(lambda: ours(q, c, p, ids))
    out[f"{queries}x{candidates}"] = row
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--dim", type=int, default=DIM, help="the towers' output dimensions (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/logits_gradient.json (logits_gradient_dim-D.json for "
                             "another --dim)")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS if args.dim == DIM else RESULTS.with_name(f"logits_gradient_dim-{args.dim}.json")
    results = {"dim": args.dim, "cpus": os.cpu_count(), "ms": {}}
    for threads in args.threads:
        done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.dim), json.dumps(SHAPES)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the child on {threads} thread(s) failed:\n{done.stderr[-3000:]}")
        results["ms"][f"{threads} thread(s)"] = json.loads(done.stdout.strip().splitlines()[-1])
    names = list(next(iter(next(iter(results["ms"].values())).values())))
    columns = [(t, s) for t in results["ms"] for s in results["ms"][t]]
    print(f"{'ms (median of 5 x 50 calls)':62}" + "".join(f"{s + ', ' + t.split()[0] + ' thr':>20}" for t, s in columns))
    for name in names:
        print(f"{name:62}" + "".join(f"{results['ms'][t][s][name]:>20.2f}" for t, s in columns))
    for t, s in columns:
        row = results["ms"][t][s]
        gradient = round(row[CHILD_NAMES["tf gradient"]] / row[CHILD_NAMES["our gradient"]], 2)
        step = round(row[CHILD_NAMES["tf step"]] / row[CHILD_NAMES["our step"]], 2)
        row["speedup of the candidates' gradient (TensorFlow's / dot_scores)"] = gradient
        row["speedup of the loss and both gradients (TensorFlow's / dot_scores)"] = step
        print(f"{s} on {t}: the candidates' gradient {gradient}x faster with dot_scores, the loss and both "
              f"gradients {step}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
