"""The model's in-batch softmax, its value and both gradients, in this checkout against an earlier commit's, side
by side, call by call.

    python benchmarks/loss_against.py [--against ec3dd6c] [--threads 1 2] [--pairs 30]

The earlier commit's ``scaleout/train/logits.py`` (``git show``) is loaded beside this checkout's as a module of
its own, in one process for each thread count, and the two are called in turn, ``--pairs`` times each, the order
swapped every pair: this machine's speed drifts by a third over minutes, and two calls a second apart see the
same machine, so the figure is the median of the pairs' ratios (with its quartiles), not a ratio of two
medians taken minutes apart (which moved by 0.8-1.4x between rounds of separate processes here). Each times
``in_batch_softmax`` with logQ correction and accidental hits removed (candidate ids drawn from 1,600, as
ml-100k's catalogue, as skewed as its training counts: a positive has as many copies in the batch, 14 at
8,192), dim 32, as the model computes it (a block of queries at a time, 4 MiB of logits a block, the default
preset's batch one): at the default preset's batch (1,024 x 1,024), one of 2 workers' share of it (512 x 1,024), the
tutorial's (8,192 x 8,192) and one of 2 workers' share of that (4,096 x 8,192). It also checks that both give
the same loss and gradients, to float32's rounding. Writes benchmarks/results/loss_against.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "loss_against.json"
SHAPES = ((1024, 1024), (512, 1024), (8192, 8192), (4096, 8192))

CHILD = r"""
import importlib.util, json, statistics, sys, time
threads, shapes, earlier, pairs = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import numpy as np
import scaleout
from scaleout.tfenv import tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
from scaleout.train import logits as now
from scaleout.train.logits import block_rows
spec = importlib.util.spec_from_file_location("earlier_logits", earlier)
before = importlib.util.module_from_spec(spec)
spec.loader.exec_module(before)


def traced(module, *args):
    def run(q, c, p, ids):
        with tf.GradientTape() as tape:
            tape.watch([q, c])
            loss = module.in_batch_softmax(q, c, candidate_sampling_probability=p, candidate_ids=ids)
        return [loss, *tape.gradient(loss, [q, c])]
    return tf.function(run).get_concrete_function(*args)


out = {}
for queries, candidates in shapes:
    rng = tf.random.Generator.from_seed(0)
    popularity = np.arange(1, 1601) ** -0.55  # sum of p^2 0.0016, ml-100k's 0.0017: 14 copies of a positive at 8,192
    ids = np.random.default_rng(0).choice(1600, size=candidates, p=popularity / popularity.sum())
    args = (rng.normal([queries, 32]) * 0.3, rng.normal([candidates, 32]) * 0.3,
            rng.uniform([candidates], 1e-4, 1e-2), tf.constant(ids, tf.int64))
    fns = {"before": traced(before, *args), "now": traced(now, *args)}
    values = {name: [x.numpy() for x in fn(*args)] for name, fn in fns.items()}  # and a warm-up call each
    calls = max(1, min(20, int(3e8 / (queries * candidates * 32))))  # a few ms a timing at the least
    seconds = {name: [] for name in fns}
    for pair in range(pairs):
        for name in ("before", "now") if pair % 2 == 0 else ("now", "before"):
            start = time.perf_counter()
            for _ in range(calls):
                fns[name](*args)[0].numpy()
            seconds[name].append((time.perf_counter() - start) / calls)
    ratios = sorted(b / n for b, n in zip(seconds["before"], seconds["now"]))
    difference = [float(np.abs(a - b).max()) / (float(np.abs(b).max()) or 1.0)
                  for a, b in zip(values["now"], values["before"])]
    out[f"{queries}x{candidates}"] = {
        "blocks": -(-queries // block_rows(candidates)),  # this checkout's
        "before_ms": round(statistics.median(seconds["before"]) * 1000, 2),
        "now_ms": round(statistics.median(seconds["now"]) * 1000, 2),
        "before_over_now": round(statistics.median(ratios), 3),
        "quartiles": [round(float(np.percentile(ratios, 25)), 3), round(float(np.percentile(ratios, 75)), 3)],
        "largest_relative_difference": [float(f"{d:.2e}") for d in difference]}
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="ec3dd6c", help="the earlier commit (default %(default)s)")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=30, help="calls of each, in turn (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {"against": args.against, "pairs": args.pairs, "by_threads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        earlier = Path(tmp) / "earlier_logits.py"
        shown = subprocess.run(["git", "-C", str(REPO), "show", f"{args.against}:scaleout/train/logits.py"],
                               capture_output=True, text=True)
        if shown.returncode:
            raise SystemExit(f"cannot read scaleout/train/logits.py at {args.against}: {shown.stderr.strip()}")
        earlier.write_text(shown.stdout)
        for threads in args.threads:
            done = subprocess.run([sys.executable, "-c", CHILD, str(threads), json.dumps(SHAPES), str(earlier),
                                   str(args.pairs)], capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                raise SystemExit(f"the losses on {threads} thread(s) failed:\n{done.stderr[-3000:]}")
            results["by_threads"][f"{threads} thread(s)"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{threads} thread(s): done", flush=True)
    print(f"\nthe in-batch softmax (logQ, accidental hits removed), value and both gradients: {args.against} "
          f"and this checkout called in turn, {args.pairs} pairs (ms: medians; ratio: the pairs' median)")
    print(f"{'queries x candidates':22}{'threads':>8}{'blocks':>8}{args.against:>12}{'now':>10}{'ratio':>8}"
          "  quartiles  largest relative difference (loss, gradients)")
    for threads, rows in results["by_threads"].items():
        for shape, row in rows.items():
            print(f"{shape:22}{threads.split()[0]:>8}{row['blocks']:>8}{row['before_ms']:>12.2f}"
                  f"{row['now_ms']:>10.2f}{row['before_over_now']:>8.3f}  {row['quartiles'][0]:.3f}-"
                  f"{row['quartiles'][1]:.3f}  {row['largest_relative_difference']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
