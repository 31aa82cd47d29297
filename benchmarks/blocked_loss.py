"""The softmax loss of large logits a block of queries at a time, against the logits in one piece, side by side.

    python benchmarks/blocked_loss.py --rounds 2

scaleout's in-batch softmax (and the full softmax) computes its [queries x
candidates] logits a block of queries at a time, with the gradient, 4 MiB of
logits a block (``scaleout.train.logits``; the default preset's batch is one
block). Two parts, each the two ways side by side:

1. The loss and both gradients (logQ correction and accidental hits on, dim 32),
   on one thread (a Ray worker of 1 CPU) and on two (one process here), each in
   a fresh process: at the default preset's batch (1,024 x 1,024), at 2,048, at
   the tutorial's (8,192 x 8,192) and at one of 2 workers' share of each
   (queries / 2 x candidates, global negatives); "model blocks" is how many
   blocks the model runs there.
2. Fits of the tutorial's batch (8,192; the default preset's other settings) in
   one process, each in a fresh process, blocks and whole logits in turn, for
   --rounds rounds: median examples/s of epochs 2+, peak resident memory, test
   top-100.

Writes benchmarks/results/blocked_loss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scaleout
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare

RESULTS = Path(__file__).parent / "results" / "blocked_loss.json"
SHAPES = ((1024, 1024), (512, 1024), (2048, 2048), (1024, 2048), (8192, 8192), (4096, 8192))
DIM = 32

LOSS_CHILD = r"""
import json, sys
threads, dim, shapes = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
import scaleout
from scaleout.tfenv import tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
from scaleout.bench.measure import median_seconds
from scaleout.train.logits import BLOCK_BYTES, MIN_BLOCK_ROWS, block_rows, blocked_softmax_loss, whole_logits
from scaleout.train.logits import in_batch_softmax


def traced(blocked, rows, *args):
    def run(q, c, p, ids):
        with tf.GradientTape() as tape:
            tape.watch([q, c])
            if blocked:
                loss = blocked_softmax_loss(q, c, tf.range(tf.shape(q)[0]), rows, 1.0,
                                            -tf.math.log(tf.clip_by_value(p, 1e-6, 1.0)), ids)
            else:
                with whole_logits():
                    loss = in_batch_softmax(q, c, candidate_sampling_probability=p, candidate_ids=ids)
        return [loss, *tape.gradient(loss, [q, c])]
    return tf.function(run).get_concrete_function(*args)


out = {}
for queries, candidates in shapes:
    rng = tf.random.Generator.from_seed(0)
    args = (rng.normal([queries, dim]) * 0.3, rng.normal([candidates, dim]) * 0.3,
            rng.uniform([candidates], 1e-4, 1e-2), rng.uniform([candidates], 0, 1600, dtype=tf.int64))
    rows = max(MIN_BLOCK_ROWS, BLOCK_BYTES // (4 * candidates))
    whole, blocked = traced(False, None, *args), traced(True, rows, *args)
    a, b = whole(*args), blocked(*args)
    difference = max(float(tf.reduce_max(tf.abs(x - y)) / tf.reduce_max(tf.abs(x))) for x, y in zip(a, b))
    calls = max(2, min(50, int(2e9 / (queries * candidates * dim * 6))))
    row = {"block rows": rows, "model blocks": -(-queries // block_rows(candidates)),
           "largest relative difference": difference}
    for name, fn in (("whole", whole), ("blocked", blocked)):
        row[name + " ms"] = round(median_seconds(lambda: fn(*args)[0].numpy(), repeats=5, calls=calls,
                                                 warmup=2) * 1000, 2)
    out[f"{queries}x{candidates}"] = row
print(json.dumps(out))
"""

FIT_CHILD = r"""
import contextlib, json, resource, sys
import scaleout
from scaleout.data.dataset import Dataset
from scaleout.train.local import evaluate, fit
from scaleout.train.logits import whole_logits
from scaleout.train.presets import configs
path, train, whole = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "whole"
model_cfg, train_cfg = configs("quality", train=train)
with whole_logits() if whole else contextlib.nullcontext():
    model, history = fit(Dataset(path), model_cfg, train_cfg)
    top_100 = evaluate(model, Dataset(path), train_cfg)["factorized_top_k/top_100_categorical_accuracy"]
print(json.dumps({"examples_per_second": [e["examples_per_second"] for e in history],
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "test_top_100": round(top_100, 4)}))
"""


def child(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(process: subprocess.Popen, what: str) -> dict:
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{what} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def losses(threads_list: list[int]) -> dict:
    out = {}
    for threads in threads_list:
        out[f"{threads} thread(s)"] = result(child(LOSS_CHILD, str(threads), str(DIM), json.dumps(SHAPES)),
                                             f"the loss on {threads} thread(s)")
    print(f"\n1. the loss and both gradients, ms (median of 5 repeats), dim {DIM}")
    print(f"{'queries x candidates':22}{'threads':>8}{'block rows':>12}{'whole':>10}{'blocked':>10}"
          f"{'whole / blocked':>17}{'model blocks':>14}")
    for threads, rows in out.items():
        for shape, row in rows.items():
            row["whole / blocked"] = round(row["whole ms"] / row["blocked ms"], 2)
            print(f"{shape:22}{threads.split()[0]:>8}{row['block rows']:>12}{row['whole ms']:>10.2f}"
                  f"{row['blocked ms']:>10.2f}{row['whole / blocked']:>17.2f}{row['model blocks']:>14}")
    return out


def fits(movielens: str, epochs: int, rounds: int) -> dict:
    runs = {"blocked": [], "whole": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(DataConfig(source="movielens", path=movielens), Path(tmp) / "data").path
        for round_ in range(rounds):
            for way in (("blocked", "whole") if round_ % 2 == 0 else ("whole", "blocked")):  # each first in turn
                start = time.monotonic()
                out = result(child(FIT_CHILD, str(data), json.dumps({"batch_size": 8192, "epochs": epochs}), way),
                             f"the {way} fit")
                out["median"] = round(statistics.median(out["examples_per_second"][1:]), 1)
                out["seconds"] = round(time.monotonic() - start, 1)
                runs[way].append(out)
                print(f"2. round {round_ + 1}, tutorial batch, {way}: {out['median']:,.0f} examples/s, peak "
                      f"{out['peak_rss_mib']:,} MiB, test top-100 {out['test_top_100']}", flush=True)
    ratios = [round(b["median"] / w["median"], 2) for b, w in zip(runs["blocked"], runs["whole"])]
    return {"runs": runs, "blocked / whole by round": ratios, "median ratio": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each fit (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of fits (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error(f"--epochs must be 2 or more (the first epoch traces the graph), got {args.epochs}")
    results = {"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(), "dim": DIM}
    results["loss"] = losses(args.threads)
    results["tutorial batch fits"] = fits(args.movielens, args.epochs, args.rounds)
    fit = results["tutorial batch fits"]
    print(f"\n2. tutorial batch in one process: blocked / whole by round {fit['blocked / whole by round']} "
          f"(median {fit['median ratio']}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
