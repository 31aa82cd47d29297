"""The model's in-batch softmax, its value and both gradients, in this checkout against an earlier commit's, side
by side.

    python benchmarks/loss_against.py [--against 96765c8] [--threads 1 2] [--rounds 2]

The earlier commit is checked out into a temporary git worktree; each (code, thread count) runs in a fresh
process that imports scaleout from its tree, the two in turn for --rounds rounds (the order swapped each round;
this machine's speed drifts over minutes). Each times ``scaleout.train.logits.in_batch_softmax`` with logQ
correction and accidental hits removed (candidate ids drawn from 1,600, as ml-100k's catalogue), dim 32, as the
model computes it (the logits whole up to two 4 MiB blocks, else a block of queries at a time): at the default
preset's batch (1,024 x 1,024), one of 2 workers' share of it (512 x 1,024), the tutorial's (8,192 x 8,192) and
one of 2 workers' share of that (4,096 x 8,192). It also checks that both give the same loss and gradients, to
float32's rounding. Prints the medians of the rounds and writes benchmarks/results/loss_against.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "loss_against.json"
SHAPES = ((1024, 1024), (512, 1024), (8192, 8192), (4096, 8192))

CHILD = r"""
import json, sys
threads, shapes, out = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
import numpy as np
import scaleout
from scaleout.tfenv import tf
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
from scaleout.bench.measure import median_seconds
from scaleout.train.logits import block_rows, in_batch_softmax


def run(q, c, p, ids):
    with tf.GradientTape() as tape:
        tape.watch([q, c])
        loss = in_batch_softmax(q, c, candidate_sampling_probability=p, candidate_ids=ids)
    return [loss, *tape.gradient(loss, [q, c])]


times, values = {}, {}
for queries, candidates in shapes:
    rng = tf.random.Generator.from_seed(0)
    args = (rng.normal([queries, 32]) * 0.3, rng.normal([candidates, 32]) * 0.3,
            rng.uniform([candidates], 1e-4, 1e-2), rng.uniform([candidates], 0, 1600, dtype=tf.int64))
    fn = tf.function(run).get_concrete_function(*args)
    key = f"{queries}x{candidates}"
    values[key] = [x.numpy() for x in fn(*args)]
    calls = max(2, min(50, int(2e9 / (queries * candidates * 32 * 6))))
    times[key] = {"ms": round(median_seconds(lambda: fn(*args)[0].numpy(), repeats=7, calls=calls, warmup=2) * 1000,
                              2), "blocked": block_rows(queries, candidates) is not None}
np.savez(out, **{f"{k}/{i}": v for k, vs in values.items() for i, v in enumerate(vs)})
print(json.dumps(times))
"""


def child(tree: Path, threads: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # before the editable install's own path
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), json.dumps(SHAPES), str(out)],
                          capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode:
        raise SystemExit(f"the loss in {tree} on {threads} thread(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="96765c8", help="the earlier commit (default %(default)s)")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        earlier = Path(tmp) / "earlier"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(earlier), args.against],
                       check=True, capture_output=True)
        try:
            trees = {"this checkout": REPO, args.against: earlier}
            for round_ in range(args.rounds):
                for threads in args.threads:
                    order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
                    for name in order:
                        out = Path(tmp) / f"{name.replace(' ', '-')}-{threads}.npz"
                        runs.setdefault(f"{threads} thread(s)", {}).setdefault(name, []).append(
                            child(trees[name], threads, out))
                        print(f"round {round_ + 1}, {threads} thread(s), {name}: done", flush=True)
            # The same loss and gradients (the last round's, 1 or 2 threads: both ran every shape)
            difference = {}
            for threads in args.threads:
                a = np.load(Path(tmp) / f"this-checkout-{threads}.npz")
                b = np.load(Path(tmp) / f"{args.against}-{threads}.npz")
                for key in a.files:
                    scale = float(np.abs(b[key]).max()) or 1.0
                    difference[key] = max(difference.get(key, 0.0), float(np.abs(a[key] - b[key]).max()) / scale)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(earlier)], check=False,
                           capture_output=True)
    results = {"against": args.against, "rounds": args.rounds, "by_threads": {}}
    print(f"\nthe in-batch softmax (logQ, accidental hits removed), value and both gradients, ms: median of "
          f"{args.rounds} rounds (each the median of 7 repeats)")
    print(f"{'queries x candidates':22}{'threads':>8}{'blocked':>9}{args.against:>12}{'now':>10}{'ratio':>8}"
          "  by round")
    for threads, by_tree in runs.items():
        rows = {}
        for shape in by_tree["this checkout"][0]:
            now = [r[shape]["ms"] for r in by_tree["this checkout"]]
            before = [r[shape]["ms"] for r in by_tree[args.against]]
            rows[shape] = {"blocked": by_tree["this checkout"][0][shape]["blocked"],
                           "before_ms": statistics.median(before), "now_ms": statistics.median(now),
                           "before_over_now": round(statistics.median(before) / statistics.median(now), 2),
                           "by_round": [round(b / n, 2) for b, n in zip(before, now)]}
            row = rows[shape]
            print(f"{shape:22}{threads.split()[0]:>8}{'yes' if row['blocked'] else 'no':>9}{row['before_ms']:>12.2f}"
                  f"{row['now_ms']:>10.2f}{row['before_over_now']:>8.2f}  {row['by_round']}")
        results["by_threads"][threads] = rows
    results["largest_relative_difference"] = {k: float(f"{v:.2e}") for k, v in difference.items()}
    print("largest relative difference against it (loss, query and candidate gradients, per shape):",
          json.dumps(results["largest_relative_difference"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
