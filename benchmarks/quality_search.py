"""The search behind ``scaleout train --preset quality``: settings chosen on validation, then checked on test.

    python benchmarks/quality_search.py --movielens ../shared/data/ml-100k

1. Prepares MovieLens 100K with the tutorial's split (random 80/20, seed 42), and
   a validation dataset from its training split alone (``--source prepared``,
   10% held out, seed 0): the test split is never looked at while choosing.
2. Trains every entry of benchmarks/quality_search.yaml on the validation
   dataset, scoring each epoch on the held-out part with seen items excluded
   (hit rate @10 and @100 over the full catalogue, scaleout.evaluate.protocols).
3. Picks an (entry, epoch) by the one-standard-error rule: among the entries
   whose best validation recall@10 is within one standard error of the best
   one, the simplest (fewest features and layers), then the best of those.
   Differences smaller than that are noise of the validation split, and a
   feature the search cannot show to help is not worth computing. An entry
   whose loss becomes NaN or infinite is kept with its curve so far, marked
   diverged and left out of the choice; the search goes on. Writes the
   choice, with every curve, to benchmarks/results/quality/search.json and a
   report with a plot to benchmarks/reports/quality/.
The preset in scaleout/train/presets.py is that choice (tests/train/test_presets.py checks
the two agree); the run with the preset on the test split is `scaleout pipeline
--preset quality`, which prints the baselines beside it. With --prepared DIR in place of --movielens, step 1
cuts the validation dataset from the training split of a dataset `scaleout prepare` wrote (your own data, any
source; its test split never read).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.config import DataConfig, ModelConfig, TrainConfig
from scaleout.data.prepare import prepare
from scaleout.errors import TrainingDiverged
from scaleout.bench.measure import machine
from scaleout.fsutil import write_json

HERE = Path(__file__).parent
GRID = HERE / "quality_search.yaml"
RESULTS = HERE / "results" / "quality" / "search.json"
REPORT = HERE / "reports" / "quality"
TRAIN_KEYS = ("batch_size", "epochs")
log = logging.getLogger("quality_search")


def validation_cuts(movielens: str | None, tmp: Path, seeds, prepared: str | None = None) -> list:
    """(dataset, loaded data) per seed: MovieLens 100K's tutorial split (random 80/20, seed 42) prepared under
    ``tmp`` (or, with ``prepared``, a dataset ``scaleout prepare`` wrote: any source, a local path or a URL), and
    its training split alone cut again 90/10 with each seed (``--source prepared``). The test split is never
    read."""
    from scaleout.evaluate.protocols import load

    if prepared is None:
        prepare(DataConfig(source="movielens", path=movielens, split="random", seed=42), tmp / "data")
    base = prepared or str(tmp / "data")
    cuts = []
    for seed in seeds:
        dataset = prepare(DataConfig(source="prepared", path=base, test_fraction=0.1, seed=seed),
                          tmp / f"cut-{seed}")
        cuts.append((dataset, load(dataset)))
    return cuts


def data_named(args) -> str:
    """What the cuts were cut from, for the results: the prepared dataset given, or MovieLens 100K's directory."""
    return f"prepared {args.prepared}" if args.prepared else f"movielens {args.movielens}"


def add_data_options(parser) -> None:
    """--movielens DIR (MovieLens 100K's files; the default) or --prepared DIR (a prepared dataset of your own),
    the data whose training split the validation cuts are cut from."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"),
                       help="MovieLens 100K's directory: its tutorial split (random 80/20, seed 42) is prepared "
                            "and its training split cut (default)")
    group.add_argument("--prepared", default=None, metavar="DIR",
                       help="a dataset `scaleout prepare` wrote (any source; a path or URL): its training split "
                            "is cut, its test split never read")


def configs(entry: dict, defaults: dict) -> tuple[ModelConfig, TrainConfig]:
    merged = {**defaults, **entry}
    train = {k: merged.pop(k) for k in TRAIN_KEYS if k in merged}
    return ModelConfig(**merged), TrainConfig(**train)


def run_entry(name: str, model_cfg: ModelConfig, train_cfg: TrainConfig, dataset, data, priors=()) -> dict:
    """Trains one entry, scoring it on the validation cut after every epoch: recall@10 and @100 with seen items
    excluded, and ``tutorial@100``, the TFRS tutorial's top-100 (every candidate ranked, the user's training
    items too; issue 16 keeps the preset's at 0.40 or more). With ``priors``, each epoch is also scored with each
    beta's popularity prior added back to the model's scores (score + beta x log(1 + the candidate's training
    count): a per-candidate term, so still a dot product with one more dimension)."""
    from scaleout.tfenv import tf
    from scaleout.evaluate.protocols import rank_metrics, rank_protocols
    from scaleout.evaluate.quality import tower_scorer
    from scaleout.train.local import fit

    seen = data.matrix(data.train)
    log_count = np.log1p(np.asarray(seen.sum(axis=0), np.float32).ravel())
    curve = []

    class Validate(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            score = tower_scorer(self.model.query_tower, self.model.candidate_tower, data)
            both = rank_protocols(score, data.test, {"exclude_seen": seen, "tutorial": None}, ks=(10, 100),
                                  ndcg_ks=(), label=name)
            m = both["exclude_seen"]
            curve.append({"epoch": epoch + 1, "recall@10": m["recall@10"], "recall@100": m["recall@100"],
                          "tutorial@100": both["tutorial"]["recall@100"]})
            for beta in priors:
                p = rank_metrics(lambda u, b=beta: score(u) + b * log_count, data.test, seen, ks=(10, 100),
                                 ndcg_ks=())
                curve[-1].setdefault("prior", {})[str(beta)] = {k: p[k] for k in ("recall@10", "recall@100")}
            log.info("%s: epoch %d validation recall@10 %.4f, @100 %.4f (tutorial protocol: top-100 %.4f)", name,
                     epoch + 1, m["recall@10"], m["recall@100"], both["tutorial"]["recall@100"])

    start = time.monotonic()
    entry = {"name": name, "model": model_cfg.__dict__ | {"top_ks": list(model_cfg.top_ks)},
             "train": {k: getattr(train_cfg, k) for k in TRAIN_KEYS}, "curve": curve}
    try:
        model, history = fit(dataset, model_cfg, train_cfg, callbacks=[Validate()])
    except TrainingDiverged as exc:  # the entry's curve so far is kept; the search goes on without it
        log.warning("%s: diverged in epoch %d (%s); left out of the choice", name, len(curve) + 1, exc)
        return {**entry, "diverged": f"in epoch {len(curve) + 1}: {exc}", "features": {"used": None},
                "best": None, "seconds": round(time.monotonic() - start, 1), "seconds_per_epoch": None}
    best = max(curve, key=lambda c: (c["recall@10"], c["recall@100"]))
    return {**entry, "features": model.features, "best": best, "seconds": round(time.monotonic() - start, 1),
            "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 2)}


def standard_error(recall: float, n: int) -> float:
    return math.sqrt(recall * (1.0 - recall) / n)


def complexity(r: dict) -> int:
    """Features, layers, and the history (a table per user) each count one."""
    return len(r["model"]["features"]) + len(r["model"]["deep_layers"]) + (1 if r["model"].get("history") else 0)


def choose(results: list[dict], n: int) -> tuple[dict, dict]:
    """(the choice by the one-standard-error rule, the entry with the best validation recall@10), among the
    entries that did not diverge."""
    results = [r for r in results if not r.get("diverged")]
    if not results:
        raise SystemExit("every entry of the search diverged: nothing to choose")
    top = max(results, key=lambda r: (r["best"]["recall@10"], r["best"]["recall@100"]))
    floor = top["best"]["recall@10"] - standard_error(top["best"]["recall@10"], n)
    near = [r for r in results if r["best"]["recall@10"] >= floor]
    return min(near, key=lambda r: (complexity(r), -r["best"]["recall@10"], -r["best"]["recall@100"])), top


def plot(results: list[dict], path: Path, best: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3
    legend_rows = -(-len(results) // columns)
    legend_inches = 0.18 * legend_rows + 0.3  # the legend below the axes, never over them or cut off
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.0 + legend_inches))
    for i, r in enumerate(results):
        epochs = [c["epoch"] for c in r["curve"]]
        style = {"color": plt.cm.tab20(i % 20), "linestyle": ("-", "--", ":")[i // 20 % 3],
                 "linewidth": 3 if r is best else 1.2}
        for ax, key in zip(axes, ("recall@10", "recall@100")):
            ax.plot(epochs, [c[key] for c in r["curve"]], marker=".", label=r["name"] + (" (chosen)" if r is best
                                                                                              else ""), **style)
    for ax, key in zip(axes, ("recall@10", "recall@100")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {key}, seen items excluded")
        ax.grid(alpha=0.3)
    fig.suptitle("Quality search on ml-100k (validation cut of the training split)")
    fig.tight_layout(rect=(0, legend_inches / (5.0 + legend_inches), 1, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=columns, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def used(r: dict) -> str:
    """The features an entry used, its history (with its table and negatives) among them; a diverged entry's,
    which never reported what it used, those it was given."""
    given = r["features"]["used"]
    names = [n for n in (r["model"]["features"] if given is None else given) if not n.startswith("history")]
    m = r["model"]
    if m.get("history"):
        names.append(f"history ({m['history_table']} table{'' if m['user_embedding'] else ', no user id'}, "
                     f"{m['negatives']} negatives)")
    return ", ".join(names) or "ids only"


def report(search: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    chosen = next(r for r in search["entries"] if r["name"] == search["choice"]["name"])
    plot(search["entries"], out / "validation_curves.png", chosen)
    lines = ["# Quality search (ml-100k, validation cut)", "",
             "Generated by `python benchmarks/quality_search.py`; every entry of `benchmarks/quality_search.yaml` is "
             "trained on 90% of the tutorial split's training rows and scored after each epoch on the other 10%, "
             "seen items excluded, over all 1,682 candidates. The test split is not used here.", "",
             f"Machine: {search['machine']}.", "",
             "| entry | best epoch | recall@10 | recall@100 | s/epoch | features used |",
             "|---|---|---|---|---|---|"]
    for r in sorted(search["entries"], key=lambda r: -r["best"]["recall@10"] if r["best"] else 1.0):
        if r.get("diverged"):
            lines.append(f"| {r['name']} | diverged {r['diverged']} | - | - | - | {used(r)} |")
            continue
        lines.append(f"| {r['name']} | {r['best']['epoch']} | {r['best']['recall@10']:.4f} | "
                     f"{r['best']['recall@100']:.4f} | {r['seconds_per_epoch']} | "
                     f"{used(r)} |")
    c, rule = search["choice"], search["rule"]
    lines += ["", f"**Choice** (the preset `quality`): {c['name']}, {c['epochs']} epochs: validation recall@10 "
              f"{c['recall@10']:.4f}, recall@100 {c['recall@100']:.4f}.", "",
              f"The rule: the highest validation recall@10 is {rule['top_name']}'s, {rule['top_recall@10']:.4f}; one "
              f"standard error of it over {search['validation']['interactions']:,} validation interactions is "
              f"{rule['standard_error']:.4f}. Of the entries within that ({', '.join(rule['within'])}), the preset "
              "is the simplest (fewest features, layers and history), then the best.", ""]
    if "history_choice" in search:
        h = search["history_choice"]
        lines += [f"**The preset `history`** (the same rule among the entries whose query is built from the user's "
                  f"items alone, so that users not seen in training are served from their items): {h['name']}, "
                  f"{h['epochs']} epochs: validation recall@10 {h['recall@10']:.4f}, recall@100 "
                  f"{h['recall@100']:.4f}.", ""]
    lines += ["![validation curves](validation_curves.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_options(parser)
    parser.add_argument("--grid", type=Path, default=GRID)
    parser.add_argument("--only", nargs="*", help="entries to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--from-results", action="store_true",
                        help="train nothing: apply the rule to the entries already in --out and rewrite the report")
    parser.add_argument("--add", action="store_true",
                        help="keep the entries already in --out and add (or replace) those run now; the rule is "
                             "applied to all of them")
    args = parser.parse_args(argv)
    if args.from_results:
        finish(json.loads(args.out.read_text()), args.out, args.report)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    grid = yaml.safe_load(args.grid.read_text())
    entries = {k: v for k, v in grid["entries"].items() if not args.only or k in args.only}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        [(validation, data)] = validation_cuts(args.movielens, Path(tmp), [0], args.prepared)
        for name, entry in entries.items():
            model_cfg, train_cfg = configs(entry, grid.get("defaults", {}))
            results.append(run_entry(name, model_cfg, train_cfg, validation, data))
            if results[-1]["best"]:
                log.info("%s: best epoch %d, recall@10 %.4f", name, results[-1]["best"]["epoch"],
                         results[-1]["best"]["recall@10"])
    if args.add and args.out.is_file():
        ran = {r["name"] for r in results}
        results = [r for r in json.loads(args.out.read_text())["entries"] if r["name"] not in ran] + results
    search = {"grid": str(args.grid.name), "validation": {"fraction": 0.1, "seed": 0,
                                                          "interactions": int(len(data.test.users))},
              "machine": f"{machine()['cpu']}, {os.cpu_count()} cores",
              "entries": results}
    finish(search, args.out, args.report)


def summary(r: dict) -> dict:
    return {"name": r["name"], "model": r["model"], "batch_size": r["train"]["batch_size"],
            "epochs": r["best"]["epoch"], "recall@10": r["best"]["recall@10"], "recall@100": r["best"]["recall@100"]}


def finish(search: dict, out: Path, report_dir: Path) -> None:
    """Applies the rule to the entries, writes search.json and the report."""
    results, n = search["entries"], search["validation"]["interactions"]
    best, top = choose(results, n)
    se = standard_error(top["best"]["recall@10"], n)
    search["rule"] = {"top_name": top["name"], "top_recall@10": top["best"]["recall@10"], "standard_error": se,
                      "within": [r["name"] for r in results
                                 if r["best"] and r["best"]["recall@10"] >= top["best"]["recall@10"] - se]}
    search["choice"] = summary(best)
    # The preset `history`: the same rule among the entries whose query tower reads the user's history (those
    # serve users not seen in training from their items).
    with_history = [r for r in results if r["model"].get("history") and not r["model"].get("user_embedding", True)
                    and not r.get("diverged")]
    if with_history:
        search["history_choice"] = summary(choose(with_history, n)[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, search)
    report(search, report_dir)
    print(json.dumps(search["choice"], indent=1))


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
