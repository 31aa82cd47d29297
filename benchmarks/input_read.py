"""The training input over plain-encoded shards (what prepare writes) against the same shards with Parquet
dictionaries (what it wrote before issue 15), side by side.

    python benchmarks/input_read.py [--interactions 4M] [--users 10M] [--items 1M] [--rounds 3]

Prepares synthetic interactions once (default: 4M at the 100M run's 10M users and 1M items, where most ids of a
row group are distinct), writes a copy of its train shards with dictionaries, and times one pass of the
training input over each, alternating, ``--rounds`` times: the batches as training reads them
(scaleout.data.tfdata.iter_batches: row groups in a shuffled order, a 100,000-row shuffle buffer, batches of
1,024, the default preset's), and the same through ``parquet_dataset``'s tf.data pipeline. Prints rows a second
(the median of the rounds) and the ratio; writes benchmarks/results/input_read.json.
"""

from __future__ import annotations

import argparse
import json
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
import pyarrow.parquet as pq  # noqa: E402

from scaleout.bench.datasets import parse_size  # noqa: E402
from scaleout.bench.measure import machine  # noqa: E402
from scaleout.config import DataConfig  # noqa: E402
from scaleout.data.prepare import prepare  # noqa: E402
from scaleout.data.tfdata import iter_batches, parquet_dataset  # noqa: E402
from scaleout.train.presets import configs  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "input_read.json"
COLUMNS = ["user_id", "movie_id"]  # what the default preset's towers read (ids only)


def with_dictionaries(files: list[Path], out: Path) -> list[Path]:
    """The same shards, row groups and rows, written with Parquet dictionaries."""
    out.mkdir()
    copies = []
    for f in files:
        reader = pq.ParquetFile(f)
        copy = out / f.name
        with pq.ParquetWriter(copy, reader.schema_arrow, compression="zstd", use_dictionary=True) as writer:
            for g in range(reader.num_row_groups):
                writer.write_table(reader.read_row_group(g))
        copies.append(copy)
    return copies


def one_pass(files: list[Path], batch: int, shuffle: int, through_tf: bool) -> float:
    """Rows a second of one pass over ``files``."""
    start, rows = time.perf_counter(), 0
    if through_tf:
        for b in parquet_dataset(files, COLUMNS, batch, shuffle, seed=0):
            rows += int(b["user_id"].shape[0])
    else:
        for b in iter_batches(files, COLUMNS, batch, shuffle, np.random.default_rng(0)):
            rows += len(b["user_id"])
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", default="4M")
    parser.add_argument("--users", default="10M")
    parser.add_argument("--items", default="1M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    _, cfg = configs("quality")  # the default preset's batch and shuffle buffer
    work = Path(tempfile.mkdtemp(prefix="scaleout-input-"))
    try:
        ds = prepare(DataConfig(source="synthetic", synthetic_interactions=parse_size(args.interactions),
                                synthetic_users=parse_size(args.users), synthetic_items=parse_size(args.items)),
                     work / "data")
        plain = ds.files("train")
        dictionary = with_dictionaries(plain, work / "dictionary")
        sizes = {"plain": sum(f.stat().st_size for f in plain), "dictionary": sum(f.stat().st_size for f in dictionary)}
        runs: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for path in ("iter_batches", "tf.data"):
                for name, files in (("plain", plain), ("dictionary", dictionary)):
                    rate = one_pass(files, cfg.batch_size, cfg.shuffle_buffer, path == "tf.data")
                    runs.setdefault(f"{path}, {name}", []).append(rate)
                    print(f"round {r + 1}: {path}, {name}: {rate:,.0f} rows/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n{ds.counts['train']:,} train rows, {len(plain)} shards; files {sizes['plain'] / 2**20:.1f} MiB plain, "
          f"{sizes['dictionary'] / 2**20:.1f} MiB with dictionaries")
    print("| input | plain (rows/s) | dictionaries (rows/s) | plain / dictionaries |\n|---|---|---|---|")
    for path in ("iter_batches", "tf.data"):
        p, d = medians[f"{path}, plain"], medians[f"{path}, dictionary"]
        print(f"| {path} | {p:,.0f} | {d:,.0f} | {p / d:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": machine(), "interactions": parse_size(args.interactions), "users": parse_size(args.users),
        "items": parse_size(args.items), "train_rows": ds.counts["train"], "shards": len(plain),
        "batch_size": cfg.batch_size, "shuffle_buffer": cfg.shuffle_buffer, "bytes": sizes,
        "rows_per_s": runs, "median_rows_per_s": medians, "date": time.strftime("%Y-%m-%d"),
    }, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
