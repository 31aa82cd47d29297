"""The ``scaleout`` command: parses arguments, builds configs, calls one library function.

Every stage reads and writes the run directory given with ``--run`` (see
scaleout.rundir for its layout). Errors in the input end the command with a
one-line message and exit status 1; TensorFlow is imported only by the stages
that need it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys

from pathlib import Path

from scaleout.cli.ending import reported
from scaleout.cli.options import (add_train_args, baseline_args, configs_from_args, data_args, data_config, index_args,
                                  index_job_config, no_evaluate_arg, non_negative, pipeline_args, pipeline_config,
                                  positive)
from scaleout.bench.cost import Prices
from scaleout.config import BACKENDS, TrainConfig
from scaleout.errors import ConfigError, ScaleoutError, stop_on_sigterm
from scaleout.names import BRUTE_FORCE, INDEX_KINDS
from scaleout.pipeline import connect_ray
from scaleout.rundir import opened
from scaleout.storage import is_remote, join, local_inputs, staged_output
from scaleout.train.presets import describe as describe_preset

log = logging.getLogger("scaleout")
# The commands that write into RUN: one at a time per run directory (see scaleout.rundir.writing).
WRITERS = ("prepare", "train", "evaluate", "index", "export", "pipeline", "quality")
# Inputs that may be s3:// or gs:// URIs but are read through libraries that need local files (the source
# files of `--path`, a SavedModel): copied from the store into a temporary directory for the command.
LOCAL_INPUTS = ("path", "saved_model")


def _print_recommendation(rec) -> None:
    who = f"user {rec.user_id}" if rec.user_id else "a new user"
    plain = all("," not in i and i == i.strip() for i in rec.items or ())
    given = f" with items {','.join(rec.items) if plain else list(rec.items)}" if rec.items else ""
    print(f"top {len(rec.titles)} for {who}{given}:")
    for rank, (movie_id, title, score) in enumerate(zip(rec.movie_ids, rec.titles, rec.scores), 1):
        print(f"  {rank}. {title}  (movie_id {movie_id}, score {score:.4f})")


def cmd_prepare(a) -> None:
    from scaleout.data.prepare import prepare

    if a.out and is_remote(a.out):
        with staged_output(a.out, "scaleout prepare", force=a.force) as out:
            ds = prepare(data_config(a), out, force=True)
        print(json.dumps({"dataset": a.out, **ds.counts}))
        return
    ds = prepare(data_config(a), a.out or a.rundir.data, force=a.force)
    print(json.dumps({"dataset": a.out or a.rundir.shown("data"), **ds.counts}))


def cmd_train(a) -> None:
    from scaleout.train.run import train_run

    model_cfg, train_cfg = configs_from_args(a)
    log.info("preset %s: %s", a.preset, describe_preset(a.preset))
    if train_cfg.backend == "ray":
        connect_ray(a.address)
    metrics = train_run(a.rundir, model_cfg, train_cfg, evaluate_test=not a.no_evaluate)
    print(json.dumps(metrics, indent=2, sort_keys=True))


def cmd_evaluate(a) -> None:
    if a.indexes:
        from scaleout.evaluate.through_index import evaluate_through_indexes

        print(json.dumps(evaluate_through_indexes(a.rundir, tuple(a.indexes), sample_users=a.sample_users,
                                                  seed=a.seed), indent=2, sort_keys=True))
        return
    if a.sample_users:
        raise ConfigError("--sample-users samples the evaluation through the indexes: add --indexes")
    from scaleout.train.run import evaluate_run

    metrics = evaluate_run(a.rundir, TrainConfig(eval_batch_size=a.eval_batch_size))
    print(json.dumps(metrics, indent=2, sort_keys=True))


def _items(text: str | None, verbatim: list[str] | None = None) -> list[str] | None:
    """``--items`` split at commas (each id stripped) followed by every ``--item``, taken as given (an id with a
    comma or outer spaces, as generic data can have); None when neither was passed."""
    if text is None and not verbatim:
        return None
    items = [] if text is None else [i.strip() for i in text.split(",") if i.strip()]
    if text is not None and not items:
        raise ScaleoutError(f"--items {text!r}: expected candidate ids separated by commas, e.g. 50,172,181")
    for item in verbatim or ():
        if not item.strip():
            raise ScaleoutError(f"--item {item!r}: expected a candidate id, not an empty or whitespace-only one")
    return items + list(verbatim or ())


def cmd_recommend(a) -> None:
    items = _items(a.items, a.item)
    user = a.user if a.user is not None else ""
    if a.saved_model:
        from scaleout.serve.export import ScannOpsMissing, query_saved_model

        try:
            rec = query_saved_model(a.saved_model, [user], None if items is None else [items])[0]
        except ScannOpsMissing as exc:
            if not a.run:
                raise
            log.warning("%s; answering with BruteForce over %s instead", exc, a.run)
            rec = _catalogue(a).recommend(user, a.k, BRUTE_FORCE, exclude_seen=a.exclude_seen, items=items)
        if len(rec.titles) < a.k:
            raise ScaleoutError(f"the SavedModel was exported with k={len(rec.titles)}; asked for -k {a.k}")
        rec = dataclasses.replace(rec, scores=rec.scores[:a.k], movie_ids=rec.movie_ids[:a.k], titles=rec.titles[:a.k])
    else:
        rec = _catalogue(a).recommend(user, a.k, a.index, exclude_seen=a.exclude_seen, items=items)
    _print_recommendation(rec)


def _catalogue(a):
    from scaleout.serve.catalogue import Catalogue

    return Catalogue(a.rundir)


def cmd_export(a) -> None:
    from scaleout.serve.export import export_retrieval

    catalogue = _catalogue(a)
    for kind in a.kind:
        if a.out and is_remote(a.out):
            uri = join(a.out, kind) if len(a.kind) > 1 else a.out
            with staged_output(uri, "scaleout export", force=a.force) as out:
                export_retrieval(catalogue, kind, out, a.k, exclude_seen=a.exclude_seen, force=True)
            print(uri)
            continue
        out = (Path(a.out) / kind if len(a.kind) > 1 else Path(a.out)) if a.out else a.rundir.export(kind)
        print(export_retrieval(catalogue, kind, out, a.k, exclude_seen=a.exclude_seen, force=a.force))


def cmd_index(a) -> None:
    from scaleout.pipeline import index_job

    cfg = index_job_config(a, a.backend)
    if cfg.embed.backend == "ray":
        connect_ray(a.address)
    print(json.dumps(index_job(a.rundir, cfg), indent=2, sort_keys=True))


def cmd_verify(a) -> None:
    from scaleout.artifacts import verify_run

    for line in verify_run(a.rundir):
        print(line)


def cmd_pipeline(a) -> None:
    from scaleout.pipeline import run_pipeline

    cfg = pipeline_config(a)
    log.info("preset %s: %s", a.preset, describe_preset(a.preset))
    if cfg.train.backend == "ray":
        connect_ray(a.address)
    summary = run_pipeline(a.rundir, cfg)
    print(json.dumps(summary, indent=2, sort_keys=True))


def cmd_quality(a) -> None:
    from scaleout.evaluate.quality import format_report, quality_report

    report = quality_report(a.rundir, tuple(a.baselines), a.sample_users, a.seed, a.ease_max_gib)
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

    write_report(a.results, a.out, a.gpu_results, a.title, force=a.force,
                 prices=Prices(cpu_core_hour=a.cpu_core_hour, gpu_hour=a.gpu_hour))
    print(f"report: {Path(a.out) / 'report.md'}")


def force_arg(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"replace the output directory even if it is not {kind} scaleout wrote (its files are lost)")


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
    force_arg(p, "a dataset")
    data_args(p)

    p = command("train", cmd_train, "train on RUN/data, save RUN/model, evaluate on the test split")
    add_train_args(p)
    no_evaluate_arg(p)

    p = command("evaluate", cmd_evaluate, "evaluate RUN/model on the test split of RUN/data")
    p.add_argument("--eval-batch-size", type=positive, default=TrainConfig().eval_batch_size)
    p.add_argument("--max-parts", type=positive, default=None,
                   help="embed at most this many parts in this run, then stop (run again to continue)")
    p.add_argument("--indexes", nargs="+", choices=INDEX_KINDS,
                   help="FactorizedTopK through these indexes of RUN/index instead (after `scaleout index`)")
    p.add_argument("--sample-users", type=non_negative, default=0,
                   help="with --indexes: the test rows of this many test users drawn at random, with 95%% "
                        "intervals (default 0: every test row)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample-users (default %(default)s)")

    p = command("index", cmd_index, "embed every candidate with RUN/model, build the indexes, evaluate through them")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: this process; ray: Ray Data and a pool of actors (default %(default)s)")
    p.add_argument("--address", default=None, help="Ray cluster address (backend ray; default as for train)")
    index_args(p)

    p = command("recommend", cmd_recommend, "print the top k titles for one user", run_required=False)
    p.add_argument("--user", help="raw user id, e.g. 42 (with --items it may be left out: a new user)")
    p.add_argument("--items", help="ids of items the user has interacted with, comma-separated (e.g. 50,172,181): "
                                   "added to the user's history, or all of it for a new user (a model trained "
                                   "with --history)")
    p.add_argument("--item", action="append", metavar="ID",
                   help="one item id taken as given, for an id with a comma or outer spaces (repeat it for "
                        "several; added after --items)")
    p.add_argument("-k", type=positive, default=3, help="how many (default %(default)s)")
    p.add_argument("--index", choices=INDEX_KINDS, default=BRUTE_FORCE,
                   help="answer from this index of RUN (scann needs `scaleout index`; default %(default)s)")
    p.add_argument("--saved-model", help="answer from this exported SavedModel directory instead; with --run, "
                                         "a ScaNN export that cannot load falls back to BruteForce with a warning")
    p.add_argument("--exclude-seen", action="store_true",
                   help="leave out the user's training items (a SavedModel does so if exported with --exclude-seen)")

    p = command("export", cmd_export, "export retrieval SavedModels to RUN/export/KIND")
    p.add_argument("--kind", nargs="+", choices=INDEX_KINDS, default=[BRUTE_FORCE],
                   help="which (scann needs `scaleout index`; default brute_force)")
    p.add_argument("-k", type=positive, default=10, help="results per query, fixed in the SavedModel (default %(default)s)")
    p.add_argument("--out", help="export directory instead of RUN/export/KIND")
    force_arg(p, "an export")
    p.add_argument("--exclude-seen", action="store_true",
                   help="the SavedModel leaves out each user's training items (it retrieves k + the most any user saw)")

    p = command("verify", cmd_verify, "recompute the fingerprints of RUN/artifacts.json and check their links")

    p = command("pipeline", cmd_pipeline, "prepare, train, evaluate, recommend and export in one go")
    pipeline_args(p)
    data_args(p)
    add_train_args(p)

    p = command("quality", cmd_quality, "hit rate and NDCG per test interaction over the full catalogue, with and "
                "without the user's training items, beside popularity, EASE and iALS; writes RUN/metrics/quality.json")
    baseline_args(p)
    p.add_argument("--sample-users", type=non_negative, default=0,
                   help="evaluate the test rows of this many test users drawn at random, with 95%% intervals "
                        "(default 0: every test user)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample-users (default %(default)s)")
    p.add_argument("--ease-max-gib", type=float, default=0.0,
                   help="skip EASE (with a note) if its item x item matrices need more (default 0: a third of "
                        "this machine's memory)")

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
    force_arg(p, "a report")
    p.add_argument("--gpu-results", nargs="+",
                   help="JSON files written by benchmarks/gpu_bruteforce.py: a GPU section (and cost table) each")
    p.add_argument("--title", default="CPU", help="report title (default %(default)s)")
    prices = Prices()
    p.add_argument("--cpu-core-hour", type=float, default=prices.cpu_core_hour,
                   help="dollars per CPU core-hour in the cost table (default %(default)s)")
    p.add_argument("--gpu-hour", type=float, default=prices.gpu_hour,
                   help="dollars per GPU-hour in the cost table (default %(default)s)")
    p.set_defaults(fn=cmd_bench_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "prepare" and not (args.run or args.out):
        parser.error("prepare needs --run RUN or --out DIR")
    if args.command == "recommend" and not (args.run or args.saved_model):
        parser.error("recommend needs --run RUN or --saved-model DIR")
    if args.command == "recommend" and args.user is None and args.items is None and not args.item:
        parser.error("recommend needs --user USER, --items ITEMS (or --item ID), or both")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    def work() -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(stop_on_sigterm(f"scaleout {args.command}"))
            fetch = stack.enter_context(local_inputs())
            for name in LOCAL_INPUTS:  # read by libraries that need local files: fetched from the store first
                if is_remote(getattr(args, name, None)):
                    setattr(args, name, str(fetch(getattr(args, name))))
            if getattr(args, "run", None):  # bench-report has no --run
                args.rundir = stack.enter_context(
                    opened(args.run, f"scaleout {args.command}" if args.command in WRITERS else None))
            args.fn(args)

    return reported(f"scaleout {args.command}", work, getattr(args, "run", None) or getattr(args, "out", None),
                    resumable=args.command in ("train", "pipeline"))


if __name__ == "__main__":
    sys.exit(main())
