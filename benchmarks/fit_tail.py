"""The end of ``model.fit``: the time from its last step to its return, with tf.data's autotuning off (scaleout's
input pipeline) and on (tf.data's default), side by side.

    python benchmarks/fit_tail.py --rounds 4

Prepares the synthetic source at MovieLens 20M's users and items (default 5M
interactions: 4M train rows), then fits the default preset for one epoch in
a fresh Python process per fit, alternating the two settings in rounds so that
this machine's drift reaches both. Each fit reports the seconds from Keras'
``on_train_end`` to ``fit``'s return (deleting the input iterator) and its
epoch's examples/s. Writes benchmarks/results/fit_tail.json.

Why: with autotuning on, every iterator starts tf.data's autotuning thread,
whose loop sleeps for a period that doubles up to 60 s and is not cut short
when the iterator is deleted, so a fit's end can wait out that sleep, at random
(scaleout.data.tfdata.fixed_pipeline_options).
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

import scaleout
from scaleout.bench.datasets import parse_size
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare

RESULTS = Path(__file__).parent / "results" / "fit_tail.json"
ML20M_SHAPE = {"synthetic_users": 138_493, "synthetic_items": 26_744}
VARIANTS = ("off (scaleout)", "on (tf.data's default)")

CHILD = r"""
import json, sys, time
import scaleout
import scaleout.data.tfdata as tfdata
from scaleout.data.dataset import Dataset
from scaleout.tfenv import tf
from scaleout.train.local import fit
from scaleout.train.presets import configs

path, autotune = sys.argv[1], sys.argv[2] == "on"
if autotune:  # tf.data's defaults, as before scaleout turned autotuning off
    tfdata.fixed_pipeline_options = lambda: tf.data.Options()
ended = {}

class End(tf.keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        ended["at"] = time.monotonic()

model_cfg, train_cfg = configs("quality", train={"epochs": 1})
_, history = fit(Dataset(path), model_cfg, train_cfg, callbacks=[End()])
returned = time.monotonic()
print(json.dumps({"tail_seconds": round(returned - ended["at"], 3),
                  "examples_per_second": history[-1]["examples_per_second"]}))
"""


def run(data: Path, autotune: bool) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(data), "on" if autotune else "off"],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", default="5M", help="of the synthetic set (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both settings (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DataConfig(source="synthetic", synthetic_interactions=parse_size(args.interactions), **ML20M_SHAPE)
        dataset = prepare(cfg, Path(tmp) / "data")
        for round_ in range(args.rounds):
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]  # each goes first in turn
            for variant in order:
                out = run(dataset.path, autotune=variant != VARIANTS[0])
                runs[variant].append(out)
                print(f"round {round_ + 1}, autotuning {variant}: {out['tail_seconds']:.2f} s from the last step to "
                      f"fit's return, {out['examples_per_second']:,.0f} examples/s", flush=True)

    print(f"\none epoch of the default preset on {dataset.counts['train']:,} train rows, a fresh process per fit")
    print(f"{'autotuning':26}{'fits':>6}{'tail s, each fit':>44}{'examples/s, median':>20}")
    summary = {}
    for variant, outs in runs.items():
        tails = [o["tail_seconds"] for o in outs]
        rate = statistics.median(o["examples_per_second"] for o in outs)
        summary[variant] = {"tail_seconds": tails, "max_tail_seconds": max(tails),
                            "median_examples_per_second": rate, "runs": outs}
        print(f"{variant:26}{len(outs):>6}{', '.join(f'{t:.2f}' for t in tails):>44}{rate:>20,.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(),
                                    "train_rows": dataset.counts["train"], "interactions": args.interactions,
                                    "autotuning": summary}, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
