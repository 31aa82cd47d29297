"""A preset on ml-100k (or synthetic data), one process against 2 Ray workers, beside the baselines, in one run.

    python benchmarks/quality_preset.py --movielens ../shared/data/ml-100k
    python benchmarks/quality_preset.py --synthetic 1000209   # MovieLens 1M's shape, synthetic

Prepares MovieLens 100K with the tutorial's split (random 80/20, seed 42) and
trains ``--preset`` (default quality) twice on it: in this process, and on 2
Ray Train workers (1 CPU each, global in-batch negatives) of a local Ray
instance with 2 CPUs. Each model is scored by scaleout.evaluate on the test
split (hit rate @1..100 and NDCG, tutorial protocol and seen items excluded);
popularity, EASE and iALS are computed once on the same split. Prints the
table (with each model over each baseline on the same test users, a 95%
interval paired over the users: scaleout.evaluate.paired), the issue's targets
checked (the ratios to EASE with those intervals), and the training times; writes
benchmarks/results/quality/preset_<preset>.json.

With --synthetic N the data is the synthetic source instead (power-law
popularity, 16 taste groups, the same split), N interactions at MovieLens 1M's
users and items (6,040 and 3,706; --synthetic-users, --synthetic-items), so
the preset is not judged on one small catalogue alone. The ml-100k targets do
not apply there; the model is set against each baseline. EASE is skipped with
a note where its item x item matrices would not fit in a third of this
machine's memory. Writes preset_<preset>_synthetic-<N>.json.

Each flag of OVERRIDES (``--help`` lists them with the setting each sets)
sets one of the preset's settings and adds its tag to the file's name
(_TAG-VALUE, in the table's order).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.config import ALLREDUCE_DTYPES, LEARNING_RATE_SCHEDULES, DataConfig, ModelConfig, TrainConfig
from scaleout.data.dataset import Dataset
from scaleout.data.prepare import prepare
from scaleout.bench.measure import machine
from scaleout.fsutil import write_json
from scaleout.rundir import RunDir

RESULTS = Path(__file__).parent / "results" / "quality"
TARGETS = {"exclude_seen recall@10": 0.17, "exclude_seen recall@100": 0.62, "tutorial recall@100": 0.30}
AHEAD_OF_EASE = 1.03  # issue 16: the preset at least 3% (relative) above EASE, seen items excluded, @10 and @100
TUTORIAL_TOP100 = 0.40  # issue 16: and its tutorial-protocol top-100 no lower than this
WORKERS_GAP = 0.01
TRAIN_SECONDS = 180  # issue 16: the default preset trains on ml-100k in under 3 minutes in one process here
ML1M = {"users": 6_040, "items": 3_706}  # MovieLens 1M's (1,000,209 interactions)


def _fields(config: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config)}


@dataclasses.dataclass(frozen=True)
class Override:
    """One of the preset's settings set from the command line: ``--FIELD`` (its dashes), set in the config that
    has that field (ModelConfig or TrainConfig), and the tag the results file's name gets (_TAG-VALUE)."""
    field: str
    tag: str
    help: str
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        holders = [c.__name__ for c in (ModelConfig, TrainConfig) if self.field in _fields(c)]
        if len(holders) != 1:
            raise ValueError(f"override {self.field!r}: expected a field of exactly one of ModelConfig and "
                             f"TrainConfig, found it in {holders or 'neither'}")

    @property
    def config(self) -> type:
        """ModelConfig or TrainConfig: the one with the field."""
        return ModelConfig if self.field in _fields(ModelConfig) else TrainConfig

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def suffix(self, value) -> str:
        return f"_{self.tag}-{value:g}" if isinstance(value, float) else f"_{self.tag}-{value}"


OVERRIDES = (
    Override("popularity_prior", "prior", "the preset with this popularity prior served",
             {"type": float, "metavar": "BETA"}),
    Override("allreduce_dtype", "allreduce", "the 2 workers' all-reduce (default the preset's)",
             {"choices": ALLREDUCE_DTYPES}),
    Override("l2", "l2", "the preset with this L2", {"type": float}),
    Override("init_stddev", "init", "the preset with its embedding tables drawn from a normal of this "
             "deviation", {"type": float, "metavar": "S"}),
    Override("learning_rate_schedule", "lr", "the preset with this schedule of its learning rate",
             {"choices": LEARNING_RATE_SCHEDULES}),
    Override("epochs", "epochs", "the preset trained this many epochs", {"type": int, "metavar": "E"}),
    Override("ials_weight", "ials", "the preset with iALS's factors served beside the towers', this weight",
             {"type": float, "metavar": "W"}),
    Override("ials_alpha", "ials-alpha", "with --ials-weight, iALS's alpha (default ModelConfig's, "
             "ml-100k's choice)", {"type": float, "metavar": "A"}),
    Override("ials_l2", "ials-l2", "with --ials-weight, iALS's regularization (default ModelConfig's, "
             "ml-100k's choice)", {"type": float, "metavar": "L2"}),
)


def overridden(args: argparse.Namespace) -> tuple[str, dict, dict]:
    """The results file's suffix, and the model's and training's settings that ``args`` sets (OVERRIDES')."""
    if (args.ials_alpha is not None or args.ials_l2 is not None) and args.ials_weight is None:
        raise SystemExit("--ials-alpha and --ials-l2 set the iALS that --ials-weight serves: give --ials-weight W")
    suffix, chosen = "", {ModelConfig: {}, TrainConfig: {}}
    for o in OVERRIDES:
        value = getattr(args, o.field)
        if value is not None:
            suffix += o.suffix(value)
            chosen[o.config][o.field] = value
    return suffix, chosen[ModelConfig], chosen[TrainConfig]


def source_config(movielens: str, synthetic: int, users: int, items: int) -> DataConfig:
    """The data this benchmark judges on: MovieLens from ``movielens``, or the synthetic source with ``synthetic``
    interactions of ``users`` and ``items``; the tutorial's random 80/20 split, seed 42."""
    if synthetic:
        return DataConfig(source="synthetic", synthetic_interactions=synthetic, synthetic_users=users,
                          synthetic_items=items, split="random", seed=42, train_shards=4)
    return DataConfig(source="movielens", path=movielens, split="random", seed=42, train_shards=4)


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--preset", default="quality")
    parser.add_argument("--synthetic", type=int, default=0, metavar="INTERACTIONS",
                        help="the synthetic source with this many interactions instead of MovieLens")
    parser.add_argument("--synthetic-users", type=int, default=ML1M["users"])
    parser.add_argument("--synthetic-items", type=int, default=ML1M["items"])
    for o in OVERRIDES:
        value = o.options.get("metavar", "VALUE")
        parser.add_argument(o.flag, default=None, **o.options,
                            help=f"{o.help} ({o.config.__name__}.{o.field}); the results file's name gets "
                                 f"_{o.tag}-{value}")
    parser.add_argument("--seeds", type=int, default=0, metavar="N",
                        help="train the preset in this process N more times with seeds 1..N: the spread over seeds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def main() -> None:
    args = arguments().parse_args()
    suffix, model_over, train_over = overridden(args)
    source = source_config(args.movielens, args.synthetic, args.synthetic_users, args.synthetic_items)
    result_file = f"preset_{args.preset}{suffix}" + (f"_synthetic-{args.synthetic}" if args.synthetic else "") + ".json"

    import ray

    from scaleout.train.presets import configs
    from scaleout.evaluate.baselines import baselines
    from scaleout.evaluate.paired import over_each, take_per_user
    from scaleout.evaluate.protocols import evaluate_scores, load
    from scaleout.evaluate.quality import format_report, model_scorer
    from scaleout.tfenv import RUNTIME_ENV_VARS
    from scaleout.train.run import train_run
    from scaleout.train.saved import Towers

    model_cfg, train_cfg = configs(args.preset, model=model_over, train=train_over)
    results: dict = {"preset": args.preset, "data": dataclasses.asdict(source), "model": dataclasses.asdict(model_cfg),
                     "train": dataclasses.asdict(train_cfg),
                     "machine": f"{machine()['cpu']}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        local, distributed = RunDir(Path(tmp) / "local"), RunDir(Path(tmp) / "ray")
        prepare(source, local.data)
        shutil.copytree(local.data, distributed.data)
        data = load(Dataset(local.data))
        runs = {}
        for name, run, backend in (("one process", local, "local"), ("2 Ray workers", distributed, "ray")):
            cfg = dataclasses.replace(train_cfg, backend=backend, workers=2, cpus_per_worker=1)
            if backend == "ray":
                ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": RUNTIME_ENV_VARS})
            start = time.monotonic()
            train_run(run, model_cfg, cfg)
            seconds = time.monotonic() - start
            if backend == "ray":
                ray.shutdown()
            fit = json.loads(run.train_metrics.read_text())["fit_seconds"]
            runs[name] = {"fit_seconds": fit, "train_and_evaluate_seconds": round(seconds, 1),
                          **evaluate_scores(model_scorer(Towers.load(run.model, Dataset(run.data)), data), data,
                                            per_user=True)}
        spread = seed_spread(local, model_cfg, train_cfg, args.seeds, data, runs["one process"]) if args.seeds else None
        base = baselines(data, per_user=True)
    # each run over each baseline on the same test users, with its interval paired over them
    ours, theirs = take_per_user(runs), take_per_user(base)
    paired = {name: over_each(sums, theirs) for name, sums in ours.items()}
    results["runs"] = runs
    results["paired"] = paired
    if spread:
        results["seeds"] = spread
    results["baselines"] = base
    report = {"ks": [1, 5, 10, 50, 100], "ndcg_ks": [10, 100], "model": runs["one process"],
              "baselines": {"model (2 Ray workers)": runs["2 Ray workers"], **base}, "paired": paired["one process"]}
    print(format_report(report))
    checks = {}
    movielens = not args.synthetic
    for name, r in runs.items():
        for target, floor in TARGETS.items() if movielens else ():
            protocol, metric = target.split()
            value = r[protocol][metric]
            checks[f"{name}: {target} >= {floor}"] = {"value": round(value, 4), "met": value >= floor}
    for metric in ("recall@10", "recall@100"):
        gap = abs(runs["2 Ray workers"]["exclude_seen"][metric] - runs["one process"]["exclude_seen"][metric])
        checks[f"|2 workers - one process| exclude_seen {metric} <= {WORKERS_GAP}"] = {"value": round(gap, 4),
                                                                                    "met": gap <= WORKERS_GAP}
    for name, r in runs.items():
        for metric in ("recall@10", "recall@100"):
            value = r["exclude_seen"][metric]
            if "ease" in base and "skipped" not in base["ease"]:
                ease = base["ease"]["exclude_seen"][metric]
                checks[f"{name}: exclude_seen {metric} >= {AHEAD_OF_EASE} x EASE ({ease:.4f})"] = {
                    "value": round(value, 4), "ratio": round(value / ease, 4), "met": value >= AHEAD_OF_EASE * ease,
                    "ratio_ci95": rounded(paired[name]["ease"]["exclude_seen"][metric]["ci95"])}
            for b in ("ials", "popularity"):
                other = base[b]["exclude_seen"][metric]
                checks[f"{name}: exclude_seen {metric} > {b} ({other:.4f})"] = {
                    "value": round(value, 4), "ratio": round(value / other, 4), "met": value > other}
        if movielens:
            top100 = r["tutorial"]["recall@100"]
            checks[f"{name}: tutorial recall@100 >= {TUTORIAL_TOP100}"] = {"value": round(top100, 4),
                                                                           "met": top100 >= TUTORIAL_TOP100}
    if movielens:
        fit = runs["one process"]["fit_seconds"]
        checks[f"one process: training < {TRAIN_SECONDS} s"] = {"value": fit, "met": fit < TRAIN_SECONDS}
    if spread:
        print_spread(spread, base)
    if "skipped" in base.get("ease", {}):
        print("EASE skipped:", base["ease"]["skipped"])
    results["checks"] = checks
    for check, v in checks.items():
        interval = (f" (x{v['ratio']:.3f}, paired 95% over the test users {v['ratio_ci95'][0]:.3f}-"
                    f"{v['ratio_ci95'][1]:.3f})") if v.get("ratio_ci95") else ""
        print(f"{'met   ' if v['met'] else 'MISSED'} {check}: {v['value']}{interval}")
    write_json(args.out / result_file, results)


def rounded(interval: list | None) -> list | None:
    return None if interval is None else [round(x, 4) for x in interval]


SPREAD_METRICS = (("exclude_seen", "recall@10"), ("exclude_seen", "recall@100"), ("tutorial", "recall@100"))


def seed_spread(run: RunDir, model_cfg, train_cfg, n: int, data, preset_run: dict) -> dict:
    """The preset trained in this process again with seeds 1..n (weights and shuffle), on ``run``'s data (its
    model replaced each time): each seed's metrics, and their mean and standard deviation with the preset's own
    (seed ``train_cfg.seed``) counted in."""
    import statistics

    from scaleout.evaluate.protocols import evaluate_scores
    from scaleout.evaluate.quality import model_scorer
    from scaleout.train.run import train_run
    from scaleout.train.saved import Towers

    def figures(r: dict) -> dict:
        return {f"{protocol} {metric}": round(r[protocol][metric], 4) for protocol, metric in SPREAD_METRICS}

    per_seed = {str(train_cfg.seed): figures(preset_run)}
    for seed in range(1, n + 1):
        train_run(run, dataclasses.replace(model_cfg, seed=seed), dataclasses.replace(train_cfg, seed=seed),
                  evaluate_test=False)
        per_seed[str(seed)] = figures(evaluate_scores(model_scorer(Towers.load(run.model, Dataset(run.data)), data),
                                                      data))
    names = list(next(iter(per_seed.values())))
    values = {name: [f[name] for f in per_seed.values()] for name in names}
    return {"per_seed": per_seed,
            "mean": {name: round(statistics.mean(v), 4) for name, v in values.items()},
            "sd": {name: round(statistics.stdev(v), 4) for name, v in values.items()}}


def print_spread(spread: dict, base: dict) -> None:
    """The seeds' table, each figure beside EASE's where EASE ran."""
    ease = base.get("ease", {}).get("exclude_seen")
    names = list(spread["mean"])
    print(f"one process over {len(spread['per_seed'])} seeds (weights and shuffle):")
    print("  seed   " + "  ".join(f"{name:>24}" for name in names))
    rows = [*spread["per_seed"].items(), ("mean", spread["mean"]), ("sd", spread["sd"])]
    for label, f in rows:
        cells = []
        for name in names:
            metric = name.split()[1]
            ratio = f" ({f[name] / ease[metric]:.3f}x EASE)" if ease and name.startswith("exclude_seen") \
                and label != "sd" else ""
            cells.append(f"{f[name]:.4f}{ratio}".rjust(24))
        print(f"  {label:<6} " + "  ".join(cells))


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    ended(main)
