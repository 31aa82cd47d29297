"""The ``scaleout`` command: parses arguments, builds configs, calls one library function.

Every stage reads and writes the run directory given with ``--run`` (see
scaleout.rundir for its layout). Errors in the input end the command with a
one-line message and exit status 1; TensorFlow is imported only by the stages
that need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from pathlib import Path

from scaleout.config import (BACKENDS, FEATURES, INDEX_MODES, OPTIMIZERS, SOURCES, SPLITS, DataConfig, IndexConfig,
                             ModelConfig, TrainConfig)
from scaleout.errors import ScaleoutError
from scaleout.presets import DEFAULT as DEFAULT_PRESET
from scaleout.presets import PRESETS
from scaleout.presets import configs as preset_configs
from scaleout.presets import describe as describe_preset
from scaleout.rundir import RunDir

MOVIELENS_DIR_ENV = "SCALEOUT_MOVIELENS_DIR"
log = logging.getLogger("scaleout")


def _data_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    g = p.add_argument_group("data")
    g.add_argument("--source", choices=SOURCES,
                   help=f"where interactions come from (default: movielens from ${MOVIELENS_DIR_ENV} when set, "
                        "else tfds)")
    g.add_argument("--path", help="MovieLens directory or zip (movielens); CSV/Parquet file or directory (generic)")
    g.add_argument("--tfds-name", default=d.tfds_name, help="TFDS MovieLens variant: 100k, 1m, 20m, 25m (default %(default)s)")
    g.add_argument("--tfds-data-dir", default=None, help="TFDS data directory")
    g.add_argument("--split", choices=SPLITS, default=d.split, help="random (default) or temporal")
    g.add_argument("--test-fraction", type=float, default=d.test_fraction, help="default %(default)s")
    g.add_argument("--seed", type=int, default=d.seed, help="split seed (default %(default)s)")
    g.add_argument("--train-shards", type=int, default=d.train_shards, help="default %(default)s")
    g.add_argument("--test-shards", type=int, default=d.test_shards, help="default %(default)s")
    g.add_argument("--row-group-size", type=int, default=d.row_group_size, help="default %(default)s")
    g.add_argument("--chunk-rows", type=int, default=d.chunk_rows, help="rows processed at a time (default %(default)s)")
    g.add_argument("--synthetic-users", type=int, default=d.synthetic_users)
    g.add_argument("--synthetic-items", type=int, default=d.synthetic_items)
    g.add_argument("--synthetic-interactions", type=int, default=d.synthetic_interactions)
    g.add_argument("--synthetic-zipf", type=float, default=d.synthetic_zipf, help="item popularity exponent")


def _data_config(a: argparse.Namespace) -> DataConfig:
    source, path = a.source, a.path
    if source is None:
        env_dir = os.environ.get(MOVIELENS_DIR_ENV)
        source, path = ("movielens", path or env_dir) if env_dir else ("tfds", path)
    return DataConfig(
        source=source, path=path, tfds_name=a.tfds_name, tfds_data_dir=a.tfds_data_dir, split=a.split,
        test_fraction=a.test_fraction, seed=a.seed, train_shards=a.train_shards, test_shards=a.test_shards,
        row_group_size=a.row_group_size, chunk_rows=a.chunk_rows, synthetic_users=a.synthetic_users,
        synthetic_items=a.synthetic_items, synthetic_interactions=a.synthetic_interactions,
        synthetic_zipf=a.synthetic_zipf,
    )


def add_train_args(p: argparse.ArgumentParser, backend: bool = True) -> None:
    """Model and training options, shared by the `scaleout` command and jobs/train.py.

    Options left out take the preset's value (see scaleout.presets), so their
    defaults are None here.
    """
    t = TrainConfig()
    g = p.add_argument_group("model and training (defaults: the preset's; see scaleout/presets.py)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help="quality: the settings of the documented search; tutorial: the TFRS tutorial's "
                        "(default %(default)s)")
    if backend:
        g.add_argument("--backend", choices=BACKENDS, default=t.backend,
                       help="local: this process; ray: Ray Train workers (default %(default)s)")
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--batch-size", type=int, help="global batch")
    g.add_argument("--epochs", type=int)
    g.add_argument("--features", nargs="*", choices=FEATURES, metavar="FEATURE",
                   help=f"side features of the towers, some of: {', '.join(FEATURES)} (none: ids only)")
    g.add_argument("--deep-layers", nargs="*", type=int, metavar="WIDTH", help="ReLU layers above the features")
    g.add_argument("--temperature", type=float, help="softmax temperature (logits / t)")
    g.add_argument("--logq-correction", action=argparse.BooleanOptionalAction,
                   help="correct the in-batch softmax for sampling bias with the candidates' training counts")
    g.add_argument("--remove-accidental-hits", action=argparse.BooleanOptionalAction,
                   help="do not count the positive's other copies in the batch as negatives")
    g.add_argument("--hard-negatives", type=int, help="keep only this many hardest in-batch negatives (0: all)")
    g.add_argument("--l2", type=float, help="L2 penalty on the embedding tables")
    g.add_argument("--shuffle-buffer", type=int, help=f"rows (default {t.shuffle_buffer})")
    g.add_argument("--train-metrics", action="store_true", default=None,
                   help="compute FactorizedTopK during training too (slow; off as the tutorial advises)")
    g.add_argument("--model-seed", type=int, help="initialisation and shuffle seed (default 42)")
    g.add_argument("--no-global-negatives", dest="global_negatives", action="store_false", default=None,
                   help="backend ray: score each query only against its own worker's batch")
    r = p.add_argument_group("Ray backend")
    r.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else the cluster on this machine, else a new local one)")
    r.add_argument("--workers", type=int, default=t.workers, help="training workers (default %(default)s)")
    r.add_argument("--cpus-per-worker", type=int, default=t.cpus_per_worker, help="default %(default)s")
    r.add_argument("--checkpoint-every", type=int, default=t.checkpoint_every, help="epochs (default %(default)s)")
    r.add_argument("--max-failures", type=int, default=t.max_failures,
                   help="worker failures survived by restarting from the last checkpoint; -1: no limit (default %(default)s)")
    r.add_argument("--storage", default=None, help="checkpoint storage: a path or s3:// gs:// URI (default RUN/checkpoints)")
    r.add_argument("--resume", action="store_true", help="continue the run stored under --storage from its last checkpoint")


_MODEL_FLAGS = {"embedding_dim": "embedding_dim", "optimizer": "optimizer", "learning_rate": "learning_rate",
                "features": "features", "deep_layers": "deep_layers", "temperature": "temperature",
                "logq_correction": "logq_correction", "remove_accidental_hits": "remove_accidental_hits",
                "hard_negatives": "hard_negatives", "l2": "l2", "train_metrics": "train_metrics",
                "model_seed": "seed", "global_negatives": "global_negatives"}
_TRAIN_FLAGS = {"batch_size": "batch_size", "epochs": "epochs", "shuffle_buffer": "shuffle_buffer",
                "model_seed": "seed"}


def configs_from_args(a: argparse.Namespace, backend: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The preset's settings with every flag given on the command line over them."""
    model = {field: getattr(a, flag) for flag, field in _MODEL_FLAGS.items() if getattr(a, flag) is not None}
    train = {field: getattr(a, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(a, flag) is not None}
    train.update(backend=backend or a.backend, workers=a.workers, cpus_per_worker=a.cpus_per_worker,
                 checkpoint_every=a.checkpoint_every, max_failures=a.max_failures, storage=a.storage, resume=a.resume)
    return preset_configs(a.preset, model, train)


def connect_ray(address: str | None) -> None:
    """Connects this process to a Ray cluster, with the environment scaleout's workers need."""
    import ray

    from scaleout.tfenv import RUNTIME_ENV_VARS

    target = address or os.environ.get("RAY_ADDRESS")
    if target and target != "auto":
        _check_reachable(target)
    try:
        ray.init(address=address, runtime_env={"env_vars": RUNTIME_ENV_VARS}, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ScaleoutError(f"cannot connect to the Ray cluster at {address or 'the default address'}: {exc}") from exc


def _print_recommendation(rec) -> None:
    print(f"top {len(rec.titles)} for user {rec.user_id}:")
    for rank, (movie_id, title, score) in enumerate(zip(rec.movie_ids, rec.titles, rec.scores), 1):
        print(f"  {rank}. {title}  (movie_id {movie_id}, score {score:.4f})")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ScaleoutError unless host:port accepts a connection (ray.init would retry for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ScaleoutError(f"Ray address {address!r} is not host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ScaleoutError(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def cmd_prepare(a) -> None:
    from scaleout.data.prepare import prepare

    ds = prepare(_data_config(a), a.out or RunDir(a.run).data)
    print(json.dumps({"dataset": str(ds.path), **ds.counts}))


def cmd_train(a) -> None:
    from scaleout.train import train_run

    model_cfg, train_cfg = configs_from_args(a)
    log.info("preset %s: %s", a.preset, describe_preset(a.preset))
    if train_cfg.backend == "ray":
        connect_ray(a.address)
    metrics = train_run(RunDir(a.run), model_cfg, train_cfg)
    print(json.dumps(metrics, indent=2, sort_keys=True))


def cmd_evaluate(a) -> None:
    if a.indexes:
        from scaleout.indexer import evaluate_through_indexes

        print(json.dumps(evaluate_through_indexes(RunDir(a.run), tuple(a.indexes)), indent=2, sort_keys=True))
        return
    from scaleout.train import evaluate_run

    metrics = evaluate_run(RunDir(a.run), TrainConfig(eval_batch_size=a.eval_batch_size))
    print(json.dumps(metrics, indent=2, sort_keys=True))


def cmd_recommend(a) -> None:
    if a.saved_model:
        from scaleout.export import ScannOpsMissing, query_saved_model

        try:
            rec = query_saved_model(a.saved_model, [a.user])[0]
        except ScannOpsMissing as exc:
            if not a.run:
                raise
            log.warning("%s; answering with BruteForce over %s instead", exc, a.run)
            rec = _catalogue(a).recommend(a.user, a.k, "brute_force", exclude_seen=a.exclude_seen)
        if len(rec.titles) < a.k:
            raise ScaleoutError(f"the SavedModel was exported with k={len(rec.titles)}; asked for -k {a.k}")
        rec = dataclasses.replace(rec, scores=rec.scores[:a.k], movie_ids=rec.movie_ids[:a.k], titles=rec.titles[:a.k])
    else:
        rec = _catalogue(a).recommend(a.user, a.k, a.index, exclude_seen=a.exclude_seen)
    _print_recommendation(rec)


def _catalogue(a):
    from scaleout.export import Catalogue

    return Catalogue(RunDir(a.run))


def cmd_export(a) -> None:
    catalogue = _catalogue(a)
    run = RunDir(a.run)
    for kind in a.kind:
        out = (Path(a.out) / kind if len(a.kind) > 1 else Path(a.out)) if a.out else run.export(kind)
        print(catalogue.export(kind, out, a.k, exclude_seen=a.exclude_seen))


def index_args(p: argparse.ArgumentParser) -> None:
    """Options of the embed-and-index job, shared by `scaleout index` and jobs/embed_index.py."""
    from scaleout.embeddings import DEFAULT_PART_ROWS
    from scaleout.indexer import INDEX_KINDS

    c = IndexConfig()
    p.add_argument("--candidates", help="candidate table: Parquet file or directory of shards "
                                        "(default RUN/data/candidates.parquet)")
    p.add_argument("--embeddings", help="index these embeddings (Parquet: movie_id, embedding [, movie_title]) "
                                        "instead of embedding with RUN/model; checked against the candidates")
    p.add_argument("--part-rows", type=int, default=DEFAULT_PART_ROWS,
                   help="candidates per output part, the unit of work and of resuming (default %(default)s)")
    p.add_argument("--max-parts", type=int, default=None,
                   help="embed at most this many parts in this run, then stop (run again to continue)")
    p.add_argument("--indexes", nargs="+", choices=INDEX_KINDS, default=list(INDEX_KINDS),
                   help="indexes to build (default: all)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip FactorizedTopK through each index on the test split")
    p.add_argument("--export", nargs="*", choices=("brute_force", "scann"), default=[],
                   help="then export these retrieval SavedModels to RUN/export/KIND")
    p.add_argument("--export-k", type=int, default=10, help="k of the exports (default %(default)s)")
    g = p.add_argument_group("ScaNN (0: scale with the number of candidates)")
    g.add_argument("--scann-mode", choices=INDEX_MODES, default=c.mode,
                   help="auto: exact below %s candidates, hashing below %s, else tree + hashing"
                        % (f"{c.brute_force_below:,}", f"{c.tree_below:,}"))
    g.add_argument("--num-leaves", type=int, default=c.num_leaves,
                   help="tree leaves (default --leaves-per-sqrt x sqrt(N))")
    g.add_argument("--leaves-per-sqrt", type=float, default=c.leaves_per_sqrt,
                   help="tree leaves per sqrt(N) when --num-leaves is 0 (default %(default)s)")
    g.add_argument("--leaves-to-search", type=int, default=c.leaves_to_search,
                   help=f"default {c.leaves_fraction:g} of the leaves")
    g.add_argument("--reorder", type=int, default=c.reorder,
                   help=f"candidates rescored exactly (default max({c.reorder_per_k} k, {c.reorder_min}))")
    g.add_argument("--dims-per-block", type=int, default=c.dims_per_block, help="default %(default)s")
    g.add_argument("--anisotropic-threshold", type=float, default=c.anisotropic_threshold, help="default %(default)s")
    g.add_argument("--training-sample-size", type=int, default=c.training_sample_size,
                   help="tree training sample (default min(N, 250k))")
    r = p.add_argument_group("Ray backend")
    r.add_argument("--workers", type=int, default=2, help="embedding actors (default %(default)s)")
    r.add_argument("--cpus-per-worker", type=int, default=1, help="default %(default)s")


def index_config(a: argparse.Namespace) -> IndexConfig:
    return IndexConfig(mode=a.scann_mode, num_leaves=a.num_leaves, leaves_per_sqrt=a.leaves_per_sqrt,
                       leaves_to_search=a.leaves_to_search,
                       reorder=a.reorder, dims_per_block=a.dims_per_block,
                       anisotropic_threshold=a.anisotropic_threshold, training_sample_size=a.training_sample_size)


def run_index_job(a: argparse.Namespace, backend: str) -> dict:
    from scaleout.indexer import evaluate_through_indexes, index_run

    run = RunDir(a.run)
    summary = index_run(run, backend=backend, workers=a.workers, cpus_per_worker=a.cpus_per_worker,
                        part_rows=a.part_rows, kinds=tuple(a.indexes), index_cfg=index_config(a),
                        candidates=a.candidates, embeddings=a.embeddings, max_parts=a.max_parts)
    if not summary["indexes"]:
        return summary
    if a.evaluate:
        if a.candidates or a.embeddings:
            log.info("--candidates or --embeddings given: skipping the evaluation on RUN/data's test split")
        else:
            summary["evaluation"] = evaluate_through_indexes(run, tuple(a.indexes))
    if a.export:
        from scaleout.export import Catalogue

        catalogue = Catalogue(run)
        summary["exports"] = {kind: str(catalogue.export(kind, run.export(kind), a.export_k)) for kind in a.export}
    return summary


def cmd_index(a) -> None:
    if a.backend == "ray":
        connect_ray(a.address)
    print(json.dumps(run_index_job(a, a.backend), indent=2, sort_keys=True))


def cmd_verify(a) -> None:
    from scaleout.artifacts import verify_run

    for line in verify_run(RunDir(a.run)):
        print(line)


def cmd_pipeline(a) -> None:
    from scaleout.pipeline import run_pipeline

    model_cfg, train_cfg = configs_from_args(a)
    log.info("preset %s: %s", a.preset, describe_preset(a.preset))
    if train_cfg.backend == "ray":
        connect_ray(a.address)
    summary = run_pipeline(RunDir(a.run), _data_config(a), model_cfg, train_cfg, a.user, a.k, a.export_k,
                           exclude_seen=a.exclude_seen, baselines=tuple(a.baselines))
    print(json.dumps(summary, indent=2, sort_keys=True))


def cmd_quality(a) -> None:
    from scaleout.quality import format_report, quality_report

    report = quality_report(RunDir(a.run), tuple(a.baselines))
    print(format_report(report))


def cmd_bench(a) -> None:
    from scaleout.bench.report import write_report
    from scaleout.bench.runner import load_config, run

    cfg = load_config(a.config or ("benchmarks/ann-quick.yaml" if a.quick else "benchmarks/ann.yaml"), seconds=a.seconds)
    counts = run(cfg, a.results, a.cache, a.run, force=a.force, only=tuple(a.only or ()))
    print(json.dumps(counts))
    if a.report:
        write_report(a.results, a.report, title=a.title)
        print(f"report: {Path(a.report) / 'report.md'}")
    if counts["failed"]:
        raise ScaleoutError(f"{counts['failed']} configurations failed; their messages are above")


def cmd_bench_report(a) -> None:
    from scaleout.bench.report import write_report

    write_report(a.results, a.out, a.gpu_results, a.title)
    print(f"report: {Path(a.out) / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaleout", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, fn, help_, run_required=True):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--run", required=run_required, help="run directory shared by the stages")
        p.set_defaults(fn=fn)
        return p

    p = command("prepare", cmd_prepare, "read a source and write train/test Parquet shards to RUN/data",
                run_required=False)
    p.add_argument("--out", help="dataset directory to write instead of RUN/data")
    _data_args(p)

    p = command("train", cmd_train, "train on RUN/data, save RUN/model, evaluate on the test split")
    add_train_args(p)

    p = command("evaluate", cmd_evaluate, "evaluate RUN/model on the test split of RUN/data")
    p.add_argument("--eval-batch-size", type=int, default=TrainConfig().eval_batch_size)
    p.add_argument("--max-parts", type=int, default=None,
                   help="embed at most this many parts in this run, then stop (run again to continue)")
    p.add_argument("--indexes", nargs="+", choices=("brute_force", "scann"),
                   help="FactorizedTopK through these indexes of RUN/index instead (after `scaleout index`)")

    p = command("index", cmd_index, "embed every candidate with RUN/model, build the indexes, evaluate through them")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: this process; ray: Ray Data and a pool of actors (default %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address (backend ray; default as for train)")
    index_args(p)

    p = command("recommend", cmd_recommend, "print the top k titles for one user", run_required=False)
    p.add_argument("--user", required=True, help="raw user id, e.g. 42")
    p.add_argument("-k", type=int, default=3, help="how many (default %(default)s)")
    p.add_argument("--index", choices=("brute_force", "scann"), default="brute_force",
                   help="answer from this index of RUN (scann needs `scaleout index`; default %(default)s)")
    p.add_argument("--saved-model", help="answer from this exported SavedModel directory instead; with --run, "
                                         "a ScaNN export that cannot load falls back to BruteForce with a warning")
    p.add_argument("--exclude-seen", action="store_true",
                   help="leave out the user's training items (a SavedModel does so if exported with --exclude-seen)")

    p = command("export", cmd_export, "export retrieval SavedModels to RUN/export/KIND")
    p.add_argument("--kind", nargs="+", choices=("brute_force", "scann"), default=["brute_force"],
                   help="which (scann needs `scaleout index`; default brute_force)")
    p.add_argument("-k", type=int, default=10, help="results per query, fixed in the SavedModel (default %(default)s)")
    p.add_argument("--out", help="export directory instead of RUN/export/KIND")
    p.add_argument("--exclude-seen", action="store_true",
                   help="the SavedModel leaves out each user's training items (it retrieves k + the most any user saw)")

    p = command("verify", cmd_verify, "recompute the fingerprints of RUN/artifacts.json and check their links")

    p = command("pipeline", cmd_pipeline, "prepare, train, evaluate, recommend and export in one go")
    p.add_argument("--user", default="42", help="user to recommend for (default %(default)s)")
    p.add_argument("-k", type=int, default=3, help="recommendations to print (default %(default)s)")
    p.add_argument("--export-k", type=int, default=10, help="k of the exported SavedModel (default %(default)s)")
    p.add_argument("--exclude-seen", action="store_true",
                   help="recommendations and exports leave out each user's training items")
    p.add_argument("--baselines", nargs="*", choices=("popularity", "ease", "ials"),
                   default=["popularity", "ease", "ials"],
                   help="baselines of the quality report, on the same split (default: all; none: the model only)")
    _data_args(p)
    add_train_args(p)

    p = command("quality", cmd_quality, "hit rate and NDCG per test interaction over the full catalogue, with and "
                "without the user's training items, beside popularity, EASE and iALS; writes RUN/metrics/quality.json")
    p.add_argument("--baselines", nargs="*", choices=("popularity", "ease", "ials"), default=["popularity", "ease", "ials"],
                   help="baselines computed on the same split (default: all)")

    p = command("bench", cmd_bench, "run the ANN benchmark grid: every index on every dataset, one result file each",
                run_required=False)
    p.add_argument("--config", help="grid YAML (default benchmarks/ann.yaml, or benchmarks/ann-quick.yaml with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes and short measures: the whole suite in minutes")
    p.add_argument("--results", default="benchmarks/results/ann", help="result files (default %(default)s)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "scaleout" / "bench"),
                   help="generated datasets (default %(default)s)")
    p.add_argument("--force", action="store_true", help="run configurations whose result file exists")
    p.add_argument("--only", nargs="+", help="these indexes of the grid only")
    p.add_argument("--seconds", type=float, help="time budget of each latency/throughput measure (overrides the grid)")
    p.add_argument("--report", help="then write the report into this directory")
    p.add_argument("--title", default="CPU", help="report title (default %(default)s)")

    p = sub.add_parser("bench-report", help="result files -> Markdown report, PNG plots, summary.json")
    p.add_argument("--results", default="benchmarks/results/ann", help="result files (default %(default)s)")
    p.add_argument("--out", required=True, help="report directory (replaced)")
    p.add_argument("--gpu-results", help="JSON written by benchmarks/gpu_bruteforce.py, for the GPU section")
    p.add_argument("--title", default="CPU", help="report title (default %(default)s)")
    p.set_defaults(fn=cmd_bench_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "prepare" and not (args.run or args.out):
        parser.error("prepare needs --run RUN or --out DIR")
    if args.command == "recommend" and not (args.run or args.saved_model):
        parser.error("recommend needs --run RUN or --saved-model DIR")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        args.fn(args)
    except ScaleoutError as exc:
        print(f"scaleout {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
