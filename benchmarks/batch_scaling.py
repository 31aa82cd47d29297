"""Batch and learning rate as workers are added: the default preset at larger global batches, side by side.

    python benchmarks/batch_scaling.py --movielens ../shared/data/ml-100k

N workers split the global batch (``--batch-size``) N ways, so a user who adds
workers either keeps the global batch (each worker's share shrinks, and the
step's fixed cost, its collectives, weighs more: see ray_scaling.py) or keeps
each worker's share and multiplies the global batch. N workers at global batch
B compute the loss and gradient of one process at batch B
(tests/train/test_train_step.py), so one process measures what the larger
batch does to quality. This trains the default preset (``quality``: Adagrad
0.1, batch 1,024, 10 epochs) at batch 1,024, 2,048 and 4,096 (the global
batch of 2 and 4 workers keeping 1,024 rows each), with the learning rate
unchanged and scaled by the square root of the batch ratio, and at 4,096 with
the epochs scaled too (the same number of steps). Prints recall@10 and @100
(random 80/20 split, seen items excluded) and examples/s; writes
benchmarks/results/batch_scaling.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

import scaleout
from scaleout.bench.measure import steady_examples_per_second
from scaleout.config import DataConfig
from scaleout.data.dataset import Dataset
from scaleout.data.prepare import prepare

RESULTS = Path(__file__).parent / "results" / "batch_scaling.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from scaleout.evaluate.protocols import evaluate_scores, load
    from scaleout.evaluate.quality import model_scorer
    from scaleout.train.local import fit
    from scaleout.train.presets import configs
    from scaleout.train.saved import Towers, save_model

    model_cfg, train_cfg = configs("quality")
    base_batch, base_lr, base_epochs = train_cfg.batch_size, model_cfg.learning_rate, train_cfg.epochs
    settings = [(base_batch, base_lr, base_epochs, "the default")]
    for factor in (2, 4):
        batch = base_batch * factor
        settings.append((batch, base_lr, base_epochs, f"{factor} workers x {base_batch}, same learning rate"))
        settings.append((batch, round(base_lr * math.sqrt(factor), 4), base_epochs,
                         f"{factor} workers x {base_batch}, learning rate x sqrt({factor})"))
    settings.append((base_batch * 4, round(base_lr * 2, 4), base_epochs * 4,
                     f"4 workers x {base_batch}, learning rate x 2, epochs x 4 (the default's steps)"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = prepare(DataConfig(source="movielens", path=args.movielens, split="random", seed=42),
                          Path(tmp) / "data")
        data = load(dataset)
        for batch, lr, epochs, label in settings:
            m = dataclasses.replace(model_cfg, learning_rate=lr)
            t = dataclasses.replace(train_cfg, batch_size=batch, epochs=epochs)
            model, history = fit(dataset, m, t)
            out = Path(tmp) / f"model-{batch}-{lr}-{epochs}"
            save_model(model, out, m, t, dataset)
            scores = evaluate_scores(model_scorer(Towers.load(out, Dataset(dataset.path)), data), data)
            row = {"setting": label, "batch_size": batch, "learning_rate": lr, "epochs": epochs,
                   "recall@10": round(scores["exclude_seen"]["recall@10"], 4),
                   "recall@100": round(scores["exclude_seen"]["recall@100"], 4),
                   "examples_per_second": round(steady_examples_per_second(history))}
            rows.append(row)
            print(f"{label}: recall@10 {row['recall@10']}, @100 {row['recall@100']}, "
                  f"{row['examples_per_second']:,} examples/s", flush=True)
    print(f"\nthe default preset on ml-100k (random 80/20, seen items excluded), {os.cpu_count()} CPUs, one process "
          "(N workers at the same global batch compute the same steps)")
    print(f"{'setting':72}{'batch':>7}{'lr':>8}{'epochs':>8}{'R@10':>8}{'R@100':>8}{'examples/s':>12}")
    for r in rows:
        print(f"{r['setting']:72}{r['batch_size']:>7}{r['learning_rate']:>8}{r['epochs']:>8}{r['recall@10']:>8}"
              f"{r['recall@100']:>8}{r['examples_per_second']:>12,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(),
                                    "runs": rows}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
