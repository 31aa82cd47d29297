"""The benchmark runner: a grid per index from a small YAML file, one result file per configuration.

The grid file (see benchmarks/ann.yaml) names the datasets and, per index,
lists of build arguments and query arguments; a list value inside an entry
expands to every combination. Each (dataset, index, build arguments) is built
in a fresh process (``python -m scaleout.bench.worker``), so its memory is its
own, and searched with every point of the query grid. Results go to
``RESULTS/<dataset>/<index>/<build>__<query>.json``; a configuration whose file
exists is skipped unless ``force``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from scaleout.bench.algorithms import ALGORITHMS, NEEDS_TENSORFLOW, make
from scaleout.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: datasets x indexes x their grids, and how long each measure may take."""

    datasets: tuple[str, ...]
    algorithms: dict  # name -> {"build": [..], "query": [..], "max_n": int}
    queries: int = 2048  # queries drawn per synthetic dataset (the test users for MovieLens)
    recall_queries: int = 1000  # queries whose recall is measured
    latency_queries: int = 1000  # single queries timed at most
    seconds: float = 5.0  # time budget of each latency / throughput measure
    batch_sizes: tuple[int, ...] = (1, 64, 1024)
    k: int = 10  # k of the throughput searches
    ks: tuple[int, ...] = (10, 100, 1000)  # recall@k and one-query latency of searches for each k
    bandwidth_mb: int = 1024

    def __post_init__(self):
        if not self.datasets or not all(isinstance(d, str) for d in self.datasets):
            raise ConfigError(f"datasets must be a list of dataset names, got {list(self.datasets)}")
        for name in ("queries", "recall_queries", "latency_queries", "k", "bandwidth_mb"):
            _whole(name, getattr(self, name))
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise ConfigError(f"seconds must be a number above 0, got {self.seconds!r}")
        for name in ("batch_sizes", "ks"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{name} must list at least one whole number, got none")
            for value in values:
                _whole(name, value)
        for name, spec in self.algorithms.items():
            if name not in ALGORITHMS:
                raise ConfigError(f"unknown index {name!r} in the grid; expected one of {', '.join(ALGORITHMS)}")
            extra = set(spec) - {"build", "query", "max_n", "min_n", "skip"}
            if extra:
                raise ConfigError(f"{name}: unknown keys {sorted(extra)}; expected build, query, max_n, min_n, skip")
            for bound in ("max_n", "min_n"):
                if bound in spec:
                    _whole(f"{name}: {bound}", spec[bound])


def _whole(name: str, value) -> None:
    """ConfigError unless ``value`` is a whole number of at least 1 (a grid's counts and sizes)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")


def load_config(path: str | Path, **overrides) -> BenchConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the benchmark grid ({exc})") from exc
    if not isinstance(raw, dict) or "datasets" not in raw or "algorithms" not in raw:
        raise ConfigError(f"{path}: expected a mapping with 'datasets' and 'algorithms'")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = set(raw) - fields
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(fields)}")
    for key in ("datasets", "batch_sizes", "ks"):
        if key in raw and not isinstance(raw[key], list):
            example = "synthetic-1M-32" if key == "datasets" else 10
            raise ConfigError(f"{path}: {key} must be a list (e.g. [{example}]), got {raw[key]!r}")
    if not isinstance(raw["algorithms"], dict):
        raise ConfigError(f"{path}: algorithms must map index names to their grids, got {raw['algorithms']!r}")
    raw["datasets"] = tuple(raw["datasets"])
    raw["batch_sizes"] = tuple(raw.get("batch_sizes", BenchConfig.batch_sizes))
    raw["ks"] = tuple(raw.get("ks", BenchConfig.ks))
    raw["algorithms"] = {name: spec or {} for name, spec in raw["algorithms"].items()}
    try:
        cfg = BenchConfig(**raw)
        check_grid(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg


def check_grid(cfg: BenchConfig) -> None:
    """Every dataset name is one the benchmark makes, every build entry makes its index and every query key is one
    the index understands, before anything runs."""
    from scaleout.bench.datasets import check_dataset_name

    for name in cfg.datasets:
        check_dataset_name(name)
    for name, spec in cfg.algorithms.items():
        cls = ALGORITHMS[name]
        for build in expand(spec.get("build")):
            make(name, build)
        for query in expand(spec.get("query")):
            unknown = set(query) - set(cls.query_params)
            if unknown:
                raise ConfigError(f"{name}: unknown query arguments {sorted(unknown)}; "
                                  f"expected {sorted(cls.query_params) or 'none'}")


def expand(entries: list | None) -> list[dict]:
    """[{"M": [16, 32], "ef": 100}] -> [{"M": 16, "ef": 100}, {"M": 32, "ef": 100}]."""
    out = []
    for entry in entries or [{}]:
        keys = sorted(entry)
        values = [v if isinstance(v, list) else [v] for v in (entry[key] for key in keys)]
        out.extend(dict(zip(keys, combo)) for combo in itertools.product(*values))
    return out


def args_key(args: dict) -> str:
    """A readable, stable file-name part for a set of arguments."""
    if not args:
        return "default"
    text = "_".join(f"{k}={args[k]}" for k in sorted(args))
    return text if len(text) <= 80 else hashlib.sha256(text.encode()).hexdigest()[:16]


def result_path(results: Path, dataset: str, algo: str, build: dict, query: dict) -> Path:
    return results / dataset / algo / f"{args_key(build)}__{args_key(query)}.json"


def run(cfg: BenchConfig, results: str | Path, cache: str | Path, run_dir: str | Path | None = None,
        force: bool = False, only: tuple[str, ...] = ()) -> dict:
    """Runs every configuration missing from ``results``; returns counts of run, skipped and failed."""
    from scaleout.bench.datasets import open_dataset

    results, cache = Path(results), Path(cache)
    counts = {"run": 0, "skipped": 0, "failed": 0}
    started = time.monotonic()
    for name in cfg.datasets:
        dataset = open_dataset(name, cache, cfg.queries, run_dir)
        for algo, spec in cfg.algorithms.items():
            if only and algo not in only:
                continue
            if not spec.get("min_n", 0) <= dataset.n <= spec.get("max_n", float("inf")):
                log.info("%s on %s: skipped (the grid runs it for %s to %s candidates)", algo, name,
                         spec.get("min_n", 0), spec.get("max_n", "any"))
                continue
            if name in spec.get("skip", ()):
                log.info("%s on %s: skipped (the grid's skip list)", algo, name)
                continue
            queries = expand(spec.get("query"))
            for build in expand(spec.get("build")):
                missing = [q for q in queries if force or not result_path(results, name, algo, build, q).is_file()]
                counts["skipped"] += len(queries) - len(missing)
                if not missing:
                    continue
                log.info("[%s] %s on %s, build %s: %d query settings (%.0f s so far)", name, algo, name,
                         args_key(build), len(missing), time.monotonic() - started)
                ok = _run_worker({"dataset": str(dataset.path), "algorithm": algo, "build": build, "queries": missing,
                                  "results": str(results), "config": dataclasses.asdict(cfg)})
                counts["run" if ok else "failed"] += len(missing)
    return counts


def _run_worker(spec: dict) -> bool:
    env = dict(os.environ)
    if spec["algorithm"] not in NEEDS_TENSORFLOW:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-m", "scaleout.bench.worker", json.dumps(spec)], env=env)
    if proc.returncode != 0:
        log.error("%s on %s, build %s failed (exit %d); see the messages above", spec["algorithm"],
                  Path(spec["dataset"]).name, args_key(spec["build"]), proc.returncode)
    return proc.returncode == 0
