"""Memory of building the embedding tables: Keras' random initializers against scaleout's TableInitializer.

    python benchmarks/table_init_memory.py --users 2000000 --items 100000 --interactions 4000000

Prepares synthetic data once, then, each in a fresh Python process and both ways in turn: (1) one Keras
``Embedding`` of the train users' rows x ``--dim`` built alone; (2) the default preset's whole model built on the
data (``build_for_dataset``) and trained ``--steps`` steps. Prints the resident memory each adds (in table sizes)
and its peak, checks that both ways give the same values (a digest of the table), and writes
benchmarks/results/table_init_memory.json.

Why: Keras draws a table as three full-size tensors (the draw, its scaling, its shift) and the BFC allocator
scaleout runs TensorFlow with keeps the freed two, so a process held about three times its tables before it
trained a step; TableInitializer draws the same values in one graph, in place (scaleout.train.initializers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import scaleout
from scaleout.config import DataConfig
from scaleout.data.prepare import prepare

RESULTS = Path(__file__).parent / "results" / "table_init_memory.json"
WAYS = ("keras", "scaleout")

CHILD = r"""
import hashlib, json, sys
import scaleout
from scaleout.tfenv import tf
import scaleout.train.towers as towers
from scaleout.data.dataset import Dataset
from scaleout.train.model import build_for_dataset
from scaleout.train.presets import configs

from scaleout.bench.measure import rss
from scaleout.stages import peak_rss_bytes

def memory():
    return {"VmRSS": rss(), "VmHWM": peak_rss_bytes()}

path, way, what, dim, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if way == "keras":  # the initializers scaleout used before TableInitializer
    towers.initializer = lambda stddev: (tf.keras.initializers.RandomNormal(stddev=stddev) if stddev > 0
                                         else "uniform")
dataset = Dataset(path)
model_cfg, train_cfg = configs("quality", model={"embedding_dim": dim})
out = {}
if what == "table":
    rows = len(dataset.vocabulary("user_id")) + 1
    tf.keras.utils.set_random_seed(model_cfg.seed)
    before = memory()
    layer = tf.keras.layers.Embedding(rows, dim, embeddings_initializer=towers.initializer(model_cfg.init_stddev))
    layer(tf.keras.Input(shape=(), dtype=tf.int64))
    out["built"] = memory()
    tables = [layer.embeddings]
else:
    from scaleout.data.tfdata import parquet_dataset
    before = memory()
    model = build_for_dataset(model_cfg, dataset, steps_per_execution=1)
    out["built"] = memory()
    data = parquet_dataset(dataset.files("train"), model.columns, train_cfg.batch_size, train_cfg.shuffle_buffer,
                           seed=train_cfg.seed, repeat=True)
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    out["trained"] = memory()
    tables = [w for w in model.trainable_weights if len(w.shape) == 2 and w.shape[0] > 1000]
digest = hashlib.sha256()
for t in tables if what == "table" else []:
    digest.update(t.numpy().tobytes())
print(json.dumps({"before": before, **out, "table_bytes": sum(int(t.shape[0] * t.shape[1]) * 4 for t in tables),
                  "digest": digest.hexdigest()[:16] if what == "table" else None}))
"""


def run(data: Path, way: str, what: str, dim: int, steps: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(data), way, what, str(dim), str(steps)],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{way} {what}: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=4_000_000)
    parser.add_argument("--dim", type=int, default=128, help="embedding dimensions (default %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="training steps after the build (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    gib = 2 ** 30
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DataConfig(source="synthetic", synthetic_interactions=args.interactions,
                         synthetic_users=args.users, synthetic_items=args.items)
        data = prepare(cfg, Path(tmp) / "data").path
        for what in ("table", "model"):
            for way in WAYS:
                out = results.setdefault(what, {})[way] = run(data, way, what, args.dim, args.steps)
                added = out["built"]["VmRSS"] - out["before"]["VmRSS"]
                line = (f"{what}, {way}: tables {out['table_bytes'] / gib:.2f} GiB; the build added "
                        f"{added / gib:.2f} GiB ({added / out['table_bytes']:.2f} tables)")
                if "trained" in out:
                    line += f"; after {args.steps} steps {out['trained']['VmRSS'] / gib:.2f} GiB"
                peak = out.get("trained", out["built"])["VmHWM"]
                print(f"{line}; peak {peak / gib:.2f} GiB", flush=True)

    table = results["table"]
    same = table["keras"]["digest"] == table["scaleout"]["digest"]
    print(f"\nthe same table values both ways (seeded by the preset): {same} ({table['keras']['digest']}, "
          f"{table['scaleout']['digest']})")
    print(f"{'':10}{'build adds (tables)':>22}{'resident after steps':>24}{'peak':>10}")
    for way in WAYS:
        m = results["model"][way]
        print(f"{way:10}{(m['built']['VmRSS'] - m['before']['VmRSS']) / m['table_bytes']:>22.2f}"
              f"{m['trained']['VmRSS'] / gib:>20.2f} GiB{m['trained']['VmHWM'] / gib:>6.2f} GiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "users": args.users,
                                    "items": args.items, "interactions": args.interactions, "dim": args.dim,
                                    "steps": args.steps, "same_values": same, "results": results},
                                   indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    if not same:
        raise SystemExit("the two ways drew different tables")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
