"""What checking content at load costs: opening a dataset and an index with and without their checksums.

    python benchmarks/content_checks.py [--rows 10000000] [--index-rows 10000000] [--out FILE]

A dataset (MovieLens 100K and a synthetic one of --rows interactions) and a BruteForce index (--index-rows
x 32 float32) are written once; then each is opened in a fresh process, three ways side by side: without
checks, with checks and an empty checksum cache (every file hashed), and with checks and the cache the
first opening filled (files unchanged since: only their stat is read). Each is opened once unmeasured
first, so that all find the files in the page cache; the unchecked and warm figures are the best of two.
Prints one table and writes the figures to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scaleout  # noqa: E402,F401
from scaleout.fsutil import write_json  # noqa: E402

OPEN = {
    "dataset": "from scaleout.data.dataset import Dataset; Dataset(path, verify=verify)",
    # unchecked: the same index with no checksums in its index.json, as indexes were saved before them
    "index": "from scaleout.index.brute_force import BruteForce; BruteForce.load(path if verify else path + '-unchecked')",
}


def seconds_to_open(kind: str, path: Path, verify: bool, cache: Path) -> float:
    """Wall seconds of one opening in a fresh process (interpreter start-up and imports excluded)."""
    code = ("import sys, time, scaleout\n"
            "path, verify = sys.argv[1], sys.argv[2] == '1'\n"
            "start = time.perf_counter()\n"
            f"{OPEN[kind]}\n"
            "print(time.perf_counter() - start)")
    env = {**os.environ, "SCALEOUT_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", code, str(path), "1" if verify else "0"], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(kind: str, path: Path, work: Path) -> dict:
    cache = Path(tempfile.mkdtemp(dir=work))  # empty: the first checked opening hashes every file
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    seconds_to_open(kind, path, False, cache)  # once first, so that every measured opening finds the files in RAM
    unchecked = min(seconds_to_open(kind, path, False, cache) for _ in range(2))
    cold = seconds_to_open(kind, path, True, cache)
    warm = min(seconds_to_open(kind, path, True, cache) for _ in range(2))
    return {"bytes": size, "unchecked_s": round(unchecked, 3), "checked_cold_cache_s": round(cold, 3),
            "checked_warm_cache_s": round(warm, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="interactions of the synthetic dataset")
    parser.add_argument("--index-rows", type=int, default=10_000_000, help="candidates of the BruteForce index")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "content_checks.json"))
    a = parser.parse_args()

    import numpy as np

    from scaleout.config import DataConfig
    from scaleout.data.prepare import prepare
    from scaleout.index.brute_force import BruteForce

    ml = Path(os.environ.get("SCALEOUT_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "ml-100k"))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        os.environ["SCALEOUT_CACHE_DIR"] = str(work / "writer-cache")  # what the writers hash stays apart
        targets = {"dataset ml-100k": ("dataset", prepare(DataConfig(source="movielens", path=str(ml)),
                                                          work / "ml").path)}
        synthetic = DataConfig(source="synthetic", synthetic_users=max(1000, a.rows // 100),
                               synthetic_items=max(100, a.rows // 1000), synthetic_interactions=a.rows, train_shards=8)
        targets[f"dataset synthetic {a.rows:,} rows"] = ("dataset", prepare(synthetic, work / "syn").path)
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((a.index_rows, 32), dtype=np.float32)
        BruteForce().build(np.arange(a.index_rows).astype(str), vectors).save(work / "index")
        del vectors
        (work / "index-unchecked").mkdir()
        for f in ("embeddings.npy", "ids.npy"):
            os.link(work / "index" / f, work / "index-unchecked" / f)
        meta = json.loads((work / "index" / "index.json").read_text())
        del meta["files"]
        (work / "index-unchecked" / "index.json").write_text(json.dumps(meta))
        targets[f"BruteForce index {a.index_rows:,} x 32"] = ("index", work / "index")
        results = {name: measure(kind, path, work) for name, (kind, path) in targets.items()}
    print(f"{'what':<40} {'MiB':>8} {'unchecked s':>12} {'checked, cold s':>16} {'checked, warm s':>16}")
    for name, r in results.items():
        print(f"{name:<40} {r['bytes'] / 2**20:>8.1f} {r['unchecked_s']:>12.3f} {r['checked_cold_cache_s']:>16.3f} "
              f"{r['checked_warm_cache_s']:>16.3f}")
    write_json(a.out, {"results": results, "cpus": os.cpu_count()})
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
