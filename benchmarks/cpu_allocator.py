"""TensorFlow's CPU allocator: training with its BFC allocator (scaleout's default) against malloc, side by side.

    python benchmarks/cpu_allocator.py --rounds 2

Prepares MovieLens 100K once, then fits the default preset (batch 1,024) and
the tutorial's batch of 8,192 in one process, each in a fresh Python process
with ``TF_CPU_ALLOCATOR_USE_BFC`` true and then false (the variable is read
when TensorFlow starts), alternating in rounds so that this machine's drift
reaches both. Prints each run's median examples/s of epochs 2+ and its peak
resident memory, the ratio of the allocators per round, and writes
benchmarks/results/cpu_allocator.json.

Why: with malloc, a tensor above 32 MiB (glibc's largest mmap threshold) is
mapped on allocation and unmapped on release, so every step faults the B x B
logits and their gradients in again page by page; the BFC allocator keeps
freed regions for the next step.
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
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare

RESULTS = Path(__file__).parent / "results" / "cpu_allocator.json"
SETTINGS = {"default preset": {}, "tutorial batch": {"batch_size": 8192}}

CHILD = r"""
import json, resource, sys
import scaleout
from scaleout.data.dataset import Dataset
from scaleout.train.local import fit
from scaleout.train.presets import configs

path, train = sys.argv[1], json.loads(sys.argv[2])
model_cfg, train_cfg = configs("quality", train=train)
model, history = fit(Dataset(path), model_cfg, train_cfg)
print(json.dumps({"allocator": model.trained_allocator,
                  "examples_per_second": [e["examples_per_second"] for e in history],
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def run(data: Path, train: dict, bfc: bool) -> dict:
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true" if bfc else "false"}
    result = subprocess.run([sys.executable, "-c", CHILD, str(data), json.dumps(train)], capture_output=True,
                            text=True, env=env)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    want = "bfc" if bfc else "malloc"
    if out["allocator"] != want:
        raise SystemExit(f"asked for the {want} allocator, TensorFlow used {out['allocator']}")
    later = out["examples_per_second"][1:] or out["examples_per_second"]
    out["median"] = round(statistics.median(later), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each run (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both allocators (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    results = {label: {"bfc": [], "malloc": []} for label in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(DataConfig(source="movielens", path=args.movielens), Path(tmp) / "data").path
        for round_ in range(args.rounds):
            for label, train in SETTINGS.items():
                for bfc in ((True, False) if round_ % 2 == 0 else (False, True)):  # each goes first in turn
                    out = run(data, {**train, "epochs": args.epochs}, bfc)
                    results[label][out["allocator"]].append(out)
                    print(f"round {round_ + 1}, {label}, {out['allocator']}: {out['median']:,.0f} examples/s, "
                          f"peak {out['peak_rss_mib']:,} MiB", flush=True)

    print(f"\nOne process on {os.cpu_count()} CPUs, MovieLens 100K, {args.epochs} epochs; median examples/s of "
          "epochs 2+")
    print(f"{'':18}{'BFC':>12}{'malloc':>12}{'BFC / malloc by round':>26}{'peak MiB (BFC, malloc)':>26}")
    summary = {}
    for label, runs in results.items():
        ratios = [round(b["median"] / m["median"], 2) for b, m in zip(runs["bfc"], runs["malloc"])]
        bfc, malloc = (statistics.median(r["median"] for r in runs[k]) for k in ("bfc", "malloc"))
        peaks = [max(r["peak_rss_mib"] for r in runs[k]) for k in ("bfc", "malloc")]
        summary[label] = {"bfc_examples_per_second": bfc, "malloc_examples_per_second": malloc,
                          "ratios_by_round": ratios, "median_ratio": statistics.median(ratios),
                          "peak_rss_mib": dict(zip(("bfc", "malloc"), peaks)), "runs": runs}
        print(f"{label:18}{bfc:>12,.0f}{malloc:>12,.0f}{', '.join(map(str, ratios)):>26}"
              f"{f'{peaks[0]:,}, {peaks[1]:,}':>26}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(),
                                    "data": "MovieLens 100K", "epochs": args.epochs, "settings": summary},
                                   indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
