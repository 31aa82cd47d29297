"""What keeping each (user, item) pair's first row costs the generic source, side by side with keeping every row.

    python benchmarks/generic_pairs.py                   # 1M, 5M, 20M rows
    python benchmarks/generic_pairs.py --sizes 100M

Each size's data is the synthetic source's independent draws (``--repeated-pairs all``) at the shape
benchmarks/scale.py uses (MovieLens 20M's users and items per interaction, up to 20M; 10M users and 1M items
at 100M), written as one Parquet file of ``user_id``, ``item_id`` and ``timestamp``: a file with repeated
pairs, as logs are. Each size is then read through ``GenericInteractions`` twice, each time in a child
process of its own (so each peak is its own): with ``--repeated-pairs all`` (every row) and ``first`` (the
default: scaleout.data.pairs numbers the ids and keeps each pair's first row). Prints seconds, the rows kept
and each child's peak resident memory, and the ratio; writes benchmarks/results/generic_pairs.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from scale import shape  # noqa: E402  (MovieLens 20M's shape, as the scale benchmark)

from scaleout.bench.datasets import parse_size  # noqa: E402
from scaleout.bench.measure import machine  # noqa: E402
from scaleout.fsutil import write_json  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "generic_pairs.json"
MODES = ("all", "first")


def write_data(size: int, path: Path, chunk_rows: int) -> dict:
    """``size`` synthetic draws, repeats kept, as a Parquet file of generic columns; the shape used."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scaleout.config import DataConfig
    from scaleout.data.synthetic import Synthetic

    s = shape(size)
    source = Synthetic(DataConfig(source="synthetic", synthetic_interactions=size, synthetic_users=s["users"],
                                  synthetic_items=s["items"], repeated_pairs="all"))
    writer = None
    for batch in source.interactions(chunk_rows):
        table = pa.table({"user_id": batch.column("user_id"), "item_id": batch.column("movie_id"),
                          "timestamp": batch.column("timestamp")})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()
    return s


def read(path: str, mode: str, chunk_rows: int) -> dict:
    """Reads ``path`` through the generic source in ``mode`` (the child process's work)."""
    from scaleout.data.generic import GenericInteractions

    started = time.perf_counter()
    rows = chunks = 0
    for batch in GenericInteractions(path, repeated_pairs=mode).interactions(chunk_rows):
        rows += batch.num_rows
        chunks += 1
        if chunks % 10 == 0:
            print(f"    {mode}: {chunks} chunks, {rows:,} rows kept, {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    return {"seconds": round(time.perf_counter() - started, 2), "rows": rows,
            "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1M,5M,20M", help="comma-separated sizes, like 1M,5M,20M")
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows a chunk (prepare's default)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(read(args.child[0], args.child[1], args.chunk_rows)))
        return {}

    results = {"machine": machine(), "chunk_rows": args.chunk_rows, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="generic_pairs-") as tmp:
        for text in args.sizes.split(","):
            size = parse_size(text)
            path = Path(tmp) / f"{size}.parquet"
            print(f"{size:,} rows: writing the data", flush=True)
            entry = {"shape": write_data(size, path, args.chunk_rows)}
            for mode in MODES:
                print(f"{size:,} rows: reading with --repeated-pairs {mode}", flush=True)
                child = subprocess.run([sys.executable, __file__, "--child", str(path), mode,
                                        "--chunk-rows", str(args.chunk_rows)],
                                       check=True, stdout=subprocess.PIPE, text=True)
                entry[mode] = json.loads(child.stdout.strip().splitlines()[-1])
            entry["ratio"] = round(entry["first"]["seconds"] / max(entry["all"]["seconds"], 1e-9), 2)
            entry["repeated_share"] = round(1 - entry["first"]["rows"] / entry["all"]["rows"], 4)
            results["sizes"][str(size)] = entry
            path.unlink()
    print(f"{'rows':>12}{'users':>12}{'items':>10}{'repeated':>10}{'all s':>8}{'first s':>9}{'ratio':>7}"
          f"{'all GiB':>9}{'first GiB':>11}")
    for size, e in results["sizes"].items():
        print(f"{int(size):>12,}{e['shape']['users']:>12,}{e['shape']['items']:>10,}{e['repeated_share']:>10.1%}"
              f"{e['all']['seconds']:>8.1f}{e['first']['seconds']:>9.1f}{e['ratio']:>7.2f}"
              f"{e['all']['peak_gib']:>9.2f}{e['first']['peak_gib']:>11.2f}")
    write_json(Path(args.out), results)
    return results


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
