"""What a run on object storage costs against a local run: the S3 round trips at ml-100k and at 10M candidates.

    python benchmarks/storage_roundtrip.py [--movielens DIR] [--candidates 10000000] [--dim 32] [--out FILE]

Starts a local S3-compatible server (moto 5.2.5 on 127.0.0.1, the one the tests use: it keeps objects in
memory and speaks HTTP through Python, so its rates are a floor for a real store, not S3's), then, side by side:

1. ml-100k: `scaleout pipeline` (local backend, default preset) into a local run directory and into
   s3://bench/runs/ml-100k, each in a fresh process: total seconds, and for the s3 run every upload the log
   reports (stage, files, MB, seconds).
2. 10M candidates x --dim float32 in parts of 500,000 (the embedding job's layout): what the Ray embedding job
   does with them on a remote run: each part uploaded by its actor, all fetched and checked by the driver, the
   finished set committed (its parts copied within the store; and, for comparison, uploaded again); then the
   set fetched again, as a later stage does; beside a local copy of the same directory (a local run renames).

Prints one table and writes the figures to --out.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import scaleout  # noqa: E402,F401
from s3server import local_s3, with_s3_env  # noqa: E402
from scaleout import storage  # noqa: E402
from scaleout.embed.job import _download_parts  # noqa: E402
from scaleout.embed.output import write_part  # noqa: E402
from scaleout.fsutil import write_json  # noqa: E402
from scaleout.names import part_name  # noqa: E402
from scaleout.rundir import stored_parts  # noqa: E402

UPLOADED = re.compile(r"uploaded (\S+) \((\d+) files, ([\d.]+) MB\) in ([\d.]+) s")


def pipeline(run: str, movielens: str, env: dict) -> dict:
    command = [str(Path(sys.executable).parent / "scaleout"), "pipeline", "--run", run, "--source", "movielens",
               "--path", movielens]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    uploads = [{"uri": m[1], "files": int(m[2]), "mb": float(m[3]), "seconds": float(m[4])}
               for m in UPLOADED.finditer(result.stderr)]
    return {"seconds": round(seconds, 1), "uploads": uploads,
            "upload_seconds": round(sum(u["seconds"] for u in uploads), 2),
            "upload_mb": round(sum(u["mb"] for u in uploads), 1)}


def candidates_roundtrip(bucket: str, n: int, dim: int, tmp: Path) -> dict:
    part_rows = 500_000
    local = tmp / "parts"
    local.mkdir()
    rng = np.random.default_rng(0)
    for number, start in enumerate(range(0, n, part_rows)):
        rows = min(part_rows, n - start)
        ids = pa.array([str(i) for i in range(start, start + rows)], pa.string())
        write_part(local, number, ids, pa.nulls(rows, pa.string()), rng.standard_normal((rows, dim), np.float32),
                   time.time(), "bench")
    parts = len(list(local.glob("part-*.parquet")))
    size_mb = sum(p.stat().st_size for p in local.iterdir()) / 1e6
    work_uri = f"{bucket}/runs/10m/.embeddings.partial"
    figures = {"candidates": n, "dim": dim, "parts": parts, "mb": round(size_mb, 1)}

    start = time.perf_counter()  # each actor's upload of its part (part file, then its sidecar)
    for number in range(parts):
        storage.upload_file(local / part_name(number), storage.join(work_uri, part_name(number)))
        storage.write_bytes(storage.join(work_uri, part_name(number, "json")),
                            (local / part_name(number, "json")).read_bytes())
    figures["actors_upload_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    _download_parts(work_uri, tmp / "fetched", parts)
    figures["driver_fetch_and_check_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()  # as RunDir.push does: the parts copied within the store, not uploaded again
    storage.commit_dir(tmp / "fetched", f"{bucket}/runs/10m/embeddings", "bench",
                       in_store=stored_parts(f"{bucket}/runs/10m"))
    storage.delete_tree(work_uri)
    figures["commit_set_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()  # what that commit would cost without the copies within the store
    storage.commit_dir(tmp / "fetched", f"{bucket}/runs/10m-uploaded/embeddings", "bench")
    figures["commit_set_uploading_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    storage.fetch_dir(f"{bucket}/runs/10m/embeddings", tmp / "again")
    figures["fetch_set_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    shutil.copytree(local, tmp / "local-copy")
    figures["local_copy_s"] = round(time.perf_counter() - start, 2)
    figures["s3_mb_per_s_up"] = round(size_mb / figures["commit_set_uploading_s"], 1)
    figures["s3_mb_per_s_down"] = round(size_mb / figures["fetch_set_s"], 1)
    figures["local_copy_mb_per_s"] = round(size_mb / max(figures["local_copy_s"], 1e-9), 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR",
                                                             str(REPO.parent / "shared" / "data" / "ml-100k")))
    parser.add_argument("--candidates", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "storage_roundtrip.json"))
    args = parser.parse_args()
    with local_s3() as (env, make_bucket), tempfile.TemporaryDirectory() as tmp:
        undo = with_s3_env(env)
        bucket = make_bucket("bench")
        local = pipeline(str(Path(tmp) / "local-run"), args.movielens, {})
        remote = pipeline(f"{bucket}/runs/ml-100k", args.movielens, env)
        big = candidates_roundtrip(bucket, args.candidates, args.dim, Path(tmp))
        undo()
    result = {"server": "moto 5.2.5 (in memory, 127.0.0.1)", "ml_100k": {"local": local, "s3": remote},
              "candidates": big}
    write_json(args.out, result)
    print(f"ml-100k pipeline (local backend): local run {local['seconds']} s, s3 run {remote['seconds']} s "
          f"(x{remote['seconds'] / local['seconds']:.2f}); uploads {remote['upload_mb']} MB in "
          f"{remote['upload_seconds']} s over {len(remote['uploads'])} commits")
    for u in remote["uploads"]:
        print(f"  {u['uri'].rsplit('/runs/ml-100k/', 1)[-1]:<20} {u['files']:>4} files {u['mb']:>8.1f} MB "
              f"{u['seconds']:>6.2f} s")
    print(f"{big['candidates']:,} candidates x {big['dim']} ({big['parts']} parts, {big['mb']} MB):")
    for key in ("actors_upload_s", "driver_fetch_and_check_s", "commit_set_s", "commit_set_uploading_s",
                "fetch_set_s", "local_copy_s"):
        print(f"  {key:<26} {big[key]:>8.2f} s")
    print(f"  S3 up {big['s3_mb_per_s_up']} MB/s, down {big['s3_mb_per_s_down']} MB/s; local copy "
          f"{big['local_copy_mb_per_s']} MB/s")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
