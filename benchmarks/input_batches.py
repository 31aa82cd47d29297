"""The training input as a pinned Ray worker pays for it: a batch a generator call with ids as str objects (how
``parquet_dataset`` read until 2026-12-03), against ``parquet_dataset`` now (a shuffle buffer's batches a call,
ids as fixed-width bytes), side by side.

    python benchmarks/input_batches.py [--synthetic 4M] [--rounds 7] [--cpu 0]

A Ray worker of a 2-worker run has one core of its own (scaleout.train.cpus), and its input pipeline's thread runs
on that core beside the training step: what a batch of input costs is taken from the step. This script pins
itself to one CPU (``--cpu``), prepares the data (MovieLens 100K by default; ``--synthetic N``: N interactions
at the 100M run's 10M users and 1M items, most ids of a buffer distinct), and times batches read inside a
``tf.function`` of 8 steps, as training reads them (``--steps-per-execution``'s default), at the default
preset's batch of 1,024 and a 2-worker share of 512, with the next batch's candidate ids (the lookahead a
2-worker step sends ahead). The two pipelines alternate, ``--rounds`` times; prints the medians (ms a batch)
and their ratio. The earlier pipeline is rebuilt here from ``iter_batches`` (str objects, a batch a call) with
the same prefetch and options. Writes benchmarks/results/input_batches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401  (before TensorFlow)

from scaleout.bench.datasets import parse_size  # noqa: E402
from scaleout.bench.measure import machine  # noqa: E402
from scaleout.config import DataConfig  # noqa: E402
from scaleout.data.prepare import prepare  # noqa: E402
from scaleout.data.tfdata import NEXT, fixed_pipeline_options, iter_batches, parquet_dataset  # noqa: E402
from scaleout.tfenv import import_tensorflow  # noqa: E402
from scaleout.train.presets import configs  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "input_batches.json"
COLUMNS = ("user_id", "movie_id")  # what the default preset's towers read (ids only)
AHEAD = "movie_id"
STEPS_A_CALL = 8


def batch_a_call(files, batch: int, shuffle: int, seed: int):
    """The earlier pipeline: one generator call a batch, ids as str objects, the next batch's candidates beside."""
    tf = import_tensorflow()
    spec = {c: tf.TensorSpec([batch], tf.string, name=c) for c in (*COLUMNS, NEXT + AHEAD)}

    def generate():
        passes = 0
        current = None
        while True:
            for following in iter_batches(files, COLUMNS, batch, shuffle, np.random.default_rng([seed, passes]), True):
                if current is not None:
                    yield {**current, NEXT + AHEAD: following[AHEAD]}
                current = following
            passes += 1

    return tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2).with_options(
        fixed_pipeline_options())


def runs_of_batches(files, batch: int, shuffle: int, seed: int):
    return parquet_dataset(files, COLUMNS, batch, shuffle, seed=seed, drop_remainder=True, repeat=True,
                           lookahead=(AHEAD,))


def ms_a_batch(data, calls: int) -> float:
    """Milliseconds a batch, read STEPS_A_CALL batches a tf.function call (after one call that traces it)."""
    tf = import_tensorflow()
    iterator = iter(data)

    @tf.function
    def call(it):
        rows = tf.constant(0, tf.int64)
        for _ in tf.range(STEPS_A_CALL):
            b = next(it)
            rows += tf.size(b[AHEAD], out_type=tf.int64) + tf.size(b[NEXT + AHEAD], out_type=tf.int64)
        return rows

    call(iterator)
    start = time.perf_counter()
    for _ in range(calls):
        call(iterator)
    return 1000 * (time.perf_counter() - start) / (calls * STEPS_A_CALL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--synthetic", default=None, metavar="N")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=400, help="batches timed a round (default %(default)s)")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to run on (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    _, cfg = configs("quality")  # the default preset's batch and shuffle buffer
    work = Path(tempfile.mkdtemp(prefix="scaleout-input-batches-"))
    try:
        if args.synthetic:
            data_cfg = DataConfig(source="synthetic", synthetic_interactions=parse_size(args.synthetic),
                                  synthetic_users=10_000_000, synthetic_items=1_000_000)
            name = f"synthetic {args.synthetic} (10M users, 1M items)"
        else:
            data_cfg = DataConfig(source="movielens", path=args.movielens, train_shards=2)
            name = "MovieLens 100K"
        ds = prepare(data_cfg, work / "data")
        files = ds.files("train")
        pipelines = {"a batch a call, str objects (before)": batch_a_call,
                     "runs of batches, fixed-width bytes (now)": runs_of_batches}
        runs: dict[str, dict[str, list[float]]] = {}
        for batch in (cfg.batch_size // 2, cfg.batch_size):
            for r in range(args.rounds):
                for label, make in pipelines.items():
                    ms = ms_a_batch(make(files, batch, cfg.shuffle_buffer, seed=r), -(-args.batches // STEPS_A_CALL))
                    runs.setdefault(str(batch), {}).setdefault(label, []).append(ms)
                    print(f"batch {batch}, round {r + 1}: {label}: {ms:.3f} ms a batch", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    before, now = pipelines
    print(f"\n{name}: {ds.counts['train']:,} train rows, {len(files)} shards; one CPU ({args.cpu}), "
          f"{STEPS_A_CALL} batches a tf.function call, median of {args.rounds} alternating rounds")
    print("| batch | before (ms a batch) | now (ms a batch) | before / now, median | by round |\n|---|---|---|---|---|")
    summary = {}
    for batch, by in runs.items():
        ratios = [b / n for b, n in zip(by[before], by[now])]
        summary[batch] = {"before_ms": statistics.median(by[before]), "now_ms": statistics.median(by[now]),
                          "ratio_median": statistics.median(ratios)}
        print(f"| {batch} | {summary[batch]['before_ms']:.3f} | {summary[batch]['now_ms']:.3f} | "
              f"{summary[batch]['ratio_median']:.2f}x | {', '.join(f'{x:.2f}' for x in ratios)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": machine(), "data": name, "train_rows": ds.counts["train"], "cpu": args.cpu,
        "shuffle_buffer": cfg.shuffle_buffer, "steps_a_call": STEPS_A_CALL, "ms_a_batch": runs, "summary": summary,
        "date": time.strftime("%Y-%m-%d"),
    }, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
