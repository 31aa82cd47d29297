"""What honest evaluation (`scaleout quality`) costs on a 10,000-movie catalogue: the model and each baseline timed.

    python benchmarks/eval_speed.py [--users 5000] [--items 10000] [--interactions 100000] [--out FILE]

Prepares a synthetic dataset of that shape (power-law popularity, 20% of interactions held out for test, so
--interactions 100000 gives 20,000 test rows), trains the quality preset for one epoch, then times
`scaleout quality`'s parts separately: the model under both protocols, popularity, EASE (its lambda chosen on
the validation cut, then the final fit and scoring) and iALS. Every test user is scored once per method, for
both protocols together. Prints one table and writes the figures to --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401
from scaleout.config import DataConfig  # noqa: E402
from scaleout.data.prepare import prepare  # noqa: E402
from scaleout.evaluate.baselines import baselines  # noqa: E402
from scaleout.evaluate.protocols import evaluate_scores, load  # noqa: E402
from scaleout.evaluate.quality import model_scorer  # noqa: E402
from scaleout.fsutil import write_json  # noqa: E402
from scaleout.rundir import RunDir  # noqa: E402
from scaleout.train.presets import configs  # noqa: E402
from scaleout.train.run import train_run  # noqa: E402
from scaleout.train.saved import Towers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "eval_speed.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp) / "run")
        dataset = prepare(DataConfig(source="synthetic", synthetic_users=args.users, synthetic_items=args.items,
                                     synthetic_interactions=args.interactions), run.data)
        model_cfg, train_cfg = configs("quality")
        train_run(run, model_cfg, train_cfg.__class__(**{**train_cfg.__dict__, "epochs": 1}))
        data = load(dataset)
        figures = {"users": args.users, "items": args.items, "interactions": args.interactions,
                   "test_rows": int(len(data.test.users)), "test_users": int(len(set(data.test.users.tolist())))}
        start = time.perf_counter()
        evaluate_scores(model_scorer(Towers.load(run.model, dataset), data), data)
        figures["model_s"] = round(time.perf_counter() - start, 1)
        for name in ("popularity", "ease", "ials"):
            start = time.perf_counter()
            baselines(data, (name,))
            figures[f"{name}_s"] = round(time.perf_counter() - start, 1)
    write_json(args.out, figures)
    print(f"{figures['test_rows']:,} test rows of {figures['test_users']:,} users over {args.items:,} candidates:")
    for key in ("model_s", "popularity_s", "ease_s", "ials_s"):
        print(f"  {key[:-2]:<11} {figures[key]:>7.1f} s  (both protocols)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
