"""Settings against EASE over several validation cuts: the mean curve of each, less noisy than one cut's.

    python benchmarks/quality_cuts.py --movielens ../shared/data/ml-100k [--cuts 3] [--only NAME ...]
    python benchmarks/quality_cuts.py --prepared DIR --only NAME --popularity-prior 0.1 0.2 0.3

--prepared DIR cuts the training split of a dataset `scaleout prepare` wrote (your own data, any source)
in place of ml-100k's; its test split is never read. EASE is computed on every cut, so a catalogue whose
item x item matrices do not fit in a third of this machine's memory is refused.

One validation cut of ml-100k (10% of the tutorial split's training rows, 8,000
interactions) has a standard error of 2.7% of recall@10: as large as the
differences issue 16 asks about (3% above EASE). This trains every entry of
benchmarks/quality_cuts.yaml (the search's keys, benchmarks/quality_search.py)
on --cuts cuts (seeds 0, 1, ...), scores it after every epoch on each cut's
held-out part with seen items excluded, and averages the curves over the cuts;
EASE (lambda 500) is scored on the same cuts. Prints, per entry, the epoch with
the best mean recall@10 and its ratios to EASE; writes
benchmarks/results/quality/cuts.json. The test split is not used.

--popularity-prior BETA ... also scores every epoch with BETA x log(1 + the
candidate's training count) added to the model's scores, the popularity that
the logQ correction takes out in training put back at serving (one more
dimension of the dot product, so the indexes serve it unchanged), and reports
each BETA's mean curve beside the entry's, and the beta chosen at the entry's epochs (``choose_prior``: the best
mean recall@10 among the betas that keep recall@100 at least the model's own; at the former `quality` preset's
10 epochs (32 dimensions, L2 0.05) it chose 0.2, and none at the present preset's 14 epochs (128 dimensions,
L2 0.1; cuts_wide_ids.json), tests/train/test_presets.py; no preset serves it, see the README):

    python benchmarks/quality_cuts.py --only "quality preset (in-batch, logQ, hits removed, L2 0.05)" \
        "full softmax, L2 0.07, 64 dims" --popularity-prior 0.05 0.1 0.2 0.3 0.5 \
        --prior-epoch 10 --out benchmarks/results/quality/cuts_prior.json

Every epoch is also scored under the TFRS tutorial's protocol (every candidate
ranked, the user's training items too): its top-100 is in each curve
(``tutorial@100``). --tutorial-floor T reports each entry's best epoch by
recall@10 among those whose mean tutorial top-100 is at least T, the best of
them over all entries (``choose_above_floor``; issue 16 asks the default preset
to keep 0.40), and plots both protocols' curves to
benchmarks/reports/quality/<out's name>.png (or --plot PATH):

    python benchmarks/quality_cuts.py --only "in-batch, logQ, hits removed, L2 0.1, 128 dims" \
        "in-batch, logQ, hits removed, L2 0.11, 128 dims" "in-batch, logQ, hits removed, L2 0.12, 128 dims" \
        "in-batch, logQ, hits removed, L2 0.14, 128 dims" --tutorial-floor 0.4 \
        --out benchmarks/results/quality/cuts_tutorial.json
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

import scaleout  # noqa: F401  (TensorFlow's environment first)
from quality_search import TRAIN_KEYS, add_data_options, configs, data_named, run_entry, validation_cuts
from scaleout.bench.measure import machine
from scaleout.fsutil import write_json

HERE = Path(__file__).parent
GRID = HERE / "quality_cuts.yaml"
RESULTS = HERE / "results" / "quality" / "cuts.json"
REPORTS = HERE / "reports" / "quality"
EASE_LAMBDA = 500.0
METRICS = ("recall@10", "recall@100")
TUTORIAL = "tutorial@100"  # the TFRS tutorial's protocol: every candidate ranked, the user's training items too
CURVE_METRICS = METRICS + (TUTORIAL,)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_options(parser)
    parser.add_argument("--grid", type=Path, default=GRID)
    parser.add_argument("--only", nargs="*", help="entries to run (default: all)")
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--popularity-prior", type=float, nargs="*", default=[], metavar="BETA",
                        help="also score every epoch with BETA x log(1 + training count) added to each candidate's "
                             "score, per BETA (a popularity prior added back at serving)")
    parser.add_argument("--prior-epoch", type=int, default=None,
                        help="the epoch the prior is chosen at (the preset's epochs; default each entry's last)")
    parser.add_argument("--tutorial-floor", type=float, default=None, metavar="T",
                        help="also report each entry's best epoch by recall@10 among those whose mean tutorial "
                             "top-100 is at least T, and the best of them over all entries (choose_above_floor; "
                             "issue 16: 0.4)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=None,
                        help="with --tutorial-floor, the plot's path (default: benchmarks/reports/quality/, named "
                             "as --out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    grid = yaml.safe_load(args.grid.read_text())
    entries = {k: v for k, v in grid["entries"].items() if not args.only or k in args.only}
    results = {"machine": f"{machine()['cpu']}, {os.cpu_count()} cores", "data": data_named(args),
               "cuts": args.cuts, "fraction": 0.1,
               "ease_lambda": EASE_LAMBDA, "popularity_prior": args.popularity_prior,
               "defaults": grid.get("defaults", {}), "entries": []}
    with tempfile.TemporaryDirectory() as tmp:
        cuts = validation_cuts(args.movielens, Path(tmp), range(args.cuts), args.prepared)
        eases = [ease_metrics(data) for _, data in cuts]
        base = {m: float(np.mean([e[m] for e in eases])) for m in METRICS}
        results["ease"] = {"mean": base, "per_cut": eases}
        print(f"EASE over {args.cuts} cuts: recall@10 {base['recall@10']:.4f}, @100 {base['recall@100']:.4f}",
              flush=True)
        for name, entry in entries.items():
            model_cfg, train_cfg = configs(entry, grid.get("defaults", {}))
            runs = [run_entry(f"{name} (cut {i})", model_cfg, train_cfg, dataset, data, priors=args.popularity_prior)
                    for i, (dataset, data) in enumerate(cuts)]
            diverged = [f"cut {i} {r['diverged']}" for i, r in enumerate(runs) if r.get("diverged")]
            if diverged:  # kept in the results with what it reached, never chosen; the other entries go on
                results["entries"].append({"name": name, "setting": entry, "diverged": diverged,
                                           "curves": [r["curve"] for r in runs]})
                print(f"{name}: diverged ({'; '.join(diverged)}): left out", flush=True)
                continue
            curves = [r["curve"] for r in runs]
            result = {"name": name, "setting": entry,
                      **averaged(curves, lambda point: point, base, floor=args.tutorial_floor)}
            print(f"{name}: {line(result, base)}", flush=True)
            if args.tutorial_floor is not None:
                print(f"{name}, tutorial top-100 at least {args.tutorial_floor}: "
                      f"{point_line(result['best_above_floor'], base)}", flush=True)
            for beta in args.popularity_prior:
                prior = averaged(curves, lambda point: point["prior"][str(beta)], base)
                result.setdefault("prior", {})[str(beta)] = prior
                print(f"{name}, popularity prior {beta}: {line(prior, base)}", flush=True)
            epoch = args.prior_epoch or len(result["mean_curve"])
            if args.popularity_prior and epoch <= len(result["mean_curve"]):
                result["prior_choice"] = {"epoch": epoch, "beta": choose_prior(result, epoch)}
                print(f"{name}: the prior at epoch {epoch} by the rule (best recall@10 of the betas that keep "
                      f"recall@100): beta {result['prior_choice']['beta']}", flush=True)
            results["entries"].append(result)
    if args.tutorial_floor is not None:
        results["tutorial_floor"] = args.tutorial_floor
        results["choice"] = choose_above_floor(results["entries"])
        print(f"the choice (best recall@10 of the epochs keeping tutorial top-100 >= {args.tutorial_floor}): "
              + (f"{results['choice']['name']}, {point_line(results['choice'], base)}" if results["choice"]
                 else "none keeps the floor"), flush=True)
    write_json(args.out, results)
    if args.tutorial_floor is not None:
        figure = args.plot or REPORTS / f"{args.out.stem}.png"
        plot_protocols(results, figure)
        print(f"wrote {figure}", flush=True)


def ease_metrics(data, weights=None) -> dict:
    """EASE (lambda EASE_LAMBDA; ``weights``: its item-item weights on this cut, where the caller has them) on a
    cut's held-out part, seen items excluded: recall@10 and @100. A user outside the training vocabulary has no
    items, so no scores."""
    from scaleout.evaluate.protocols import rank_metrics

    seen = data.matrix(data.train)
    weights = ease_weights(seen) if weights is None else weights
    m = rank_metrics(lambda u: np.asarray(seen[np.maximum(u, 0)] @ weights) * (u >= 0)[:, None], data.test, seen,
                     ks=(10, 100), ndcg_ks=())
    return {k: m[k] for k in METRICS}


def ease_weights(seen) -> np.ndarray:
    """EASE's item-item weights (lambda EASE_LAMBDA) on a cut's training matrix; a catalogue whose matrices would
    not fit in a third of this machine's memory is refused, naming its size (every setting here is compared with
    EASE)."""
    from scaleout.evaluate.baselines import ease, ease_bytes, memory_limit

    need, limit = ease_bytes(seen.shape[1]), memory_limit()
    if need > limit:
        raise SystemExit(f"EASE on this catalogue of {seen.shape[1]:,} items needs about {need / 2**30:.1f} GiB "
                         f"(three {seen.shape[1]:,} x {seen.shape[1]:,} float64 matrices), more than the "
                         f"{limit / 2**30:.1f} GiB allowed (a third of this machine's memory): the validation cuts "
                         "compare every setting with EASE; cut a smaller catalogue or use a larger machine")
    return ease(seen, EASE_LAMBDA)


def choose_prior(result: dict, epoch: int) -> float:
    """The popularity prior's beta for an entry trained ``epoch`` epochs (its preset's): of the betas whose mean
    validation recall@100 at that epoch is no lower than the model's own (beta 0), the one with the best mean
    recall@10 there (0 when none lifts it)."""
    def at(curve):
        return next(p for p in curve if p["epoch"] == epoch)

    own = at(result["mean_curve"])
    best, chosen = own["recall@10"], 0.0
    for beta, prior in sorted(result.get("prior", {}).items(), key=lambda kv: float(kv[0])):
        point = at(prior["mean_curve"])
        if point["recall@100"] >= own["recall@100"] and point["recall@10"] > best:
            best, chosen = point["recall@10"], float(beta)
    return chosen


def averaged(curves: list[list[dict]], pick, base: dict, floor: float | None = None) -> dict:
    """The cuts' mean curve of the metrics ``pick`` takes from each epoch's point (recall@10 and @100 with seen
    items excluded; the tutorial protocol's top-100 where the points have it), its best epoch by recall@10 (then
    @100), its best by recall@100 alone, and the best's ratios to EASE's ``base``. With ``floor``, also its best
    epoch by recall@10 among those whose mean tutorial top-100 is at least ``floor`` (None where none is)."""
    metrics = [m for m in CURVE_METRICS if all(m in pick(c[0]) for c in curves)]
    mean = [{"epoch": i + 1, **{m: float(np.mean([pick(c[i])[m] for c in curves])) for m in metrics}}
            for i in range(min(len(c) for c in curves))]
    best = max(mean, key=by_recall)
    out = {"mean_curve": mean, "best": best, "best_recall@100": max(mean, key=lambda c: c["recall@100"]),
           "over_ease": {m: best[m] / base[m] for m in METRICS}}
    if floor is not None:
        kept = [c for c in mean if c.get(TUTORIAL, -1.0) >= floor]
        out["best_above_floor"] = max(kept, key=by_recall) if kept else None
    return out


def plot_protocols(results: dict, path: Path) -> None:
    """Each entry's mean curve over the epochs: recall@10 and @100 with seen items excluded (EASE's dotted), and
    the tutorial protocol's top-100 (the floor dotted), side by side; the choice under the floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    choice = results.get("choice") or {}
    preset = preset_point(results["entries"], grid_defaults(results))
    for i, entry in enumerate(e for e in results["entries"] if not e.get("diverged")):
        epochs = [p["epoch"] for p in entry["mean_curve"]]
        chosen = entry["name"] == choice.get("name")
        for ax, key in zip(axes, CURVE_METRICS):
            if key in entry["mean_curve"][0]:
                ax.plot(epochs, [p[key] for p in entry["mean_curve"]], marker=".", color=plt.cm.tab10(i % 10),
                        linewidth=2.5 if chosen else 1.2, label=entry["name"])
                if chosen:
                    ax.plot([choice["epoch"]], [choice[key]], marker="o", markersize=11, fillstyle="none",
                            color="black", label=f"the floor's choice (epoch {choice['epoch']})")
                if preset and preset["name"] == entry["name"]:
                    ax.plot([preset["epoch"]], [preset[key]], marker="s", markersize=11, fillstyle="none",
                            color="black", label=f"the quality preset (epoch {preset['epoch']})")
    for ax, key in zip(axes, CURVE_METRICS):
        if key == TUTORIAL:
            ax.axhline(results["tutorial_floor"], color="grey", linestyle=":", label="the floor")
            ax.set_ylabel("validation top-100, tutorial protocol (training items ranked too)")
        else:
            ax.axhline(results["ease"]["mean"][key], color="grey", linestyle=":", label="EASE")
            ax.set_ylabel(f"validation {key}, seen items excluded")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ml-100k, mean of {results['cuts']} validation cuts: the two protocols along the epochs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def preset_point(entries: list[dict], defaults: dict) -> dict | None:
    """The `quality` preset's mean point among the entries (the entry of its model settings and batch, with the
    grid's ``defaults`` they ran under, at the preset's epochs), or None where no entry trains them that long."""
    from scaleout.train.presets import configs as preset_configs

    model, train = preset_configs("quality")
    for entry in (e for e in entries if not e.get("diverged")):
        entry_model, entry_train = configs(entry["setting"], defaults)
        if entry_model == model and entry_train.batch_size == train.batch_size:
            point = next((p for p in entry["mean_curve"] if p["epoch"] == train.epochs), None)
            return {"name": entry["name"], **point} if point else None
    return None


def grid_defaults(results: dict) -> dict:
    """The grid's defaults a result ran under: recorded in it since 2026-12-05; before, the grid's, unchanged
    since the grid was made ({batch_size: 1024, epochs: 30})."""
    if "defaults" in results:
        return results["defaults"]
    return yaml.safe_load(GRID.read_text()).get("defaults", {})


def by_recall(point: dict) -> tuple[float, float]:
    return point["recall@10"], point["recall@100"]


def choose_above_floor(entries: list[dict]) -> dict | None:
    """The setting a preset would take to keep issue 16's floor on the tutorial protocol, over a cuts run made
    with ``--tutorial-floor``: of every entry's epochs whose mean tutorial top-100 is at least the floor, the one
    with the best mean recall@10 (seen items excluded; then recall@100): {"name", "setting", "epoch", and the
    point's metrics}. None where no epoch of any entry keeps the floor. (The `quality` preset is not chosen by
    it; the README says why.)"""
    kept = [(e, e["best_above_floor"]) for e in entries if e.get("best_above_floor")]
    if not kept:
        return None
    entry, point = max(kept, key=lambda ep: by_recall(ep[1]))
    return {"name": entry["name"], "setting": entry["setting"], **point}


def line(result: dict, base: dict) -> str:
    best100 = result["best_recall@100"]
    return f"{point_line(result['best'], base)}; best @100 {best100['recall@100']:.4f} (epoch {best100['epoch']})"


def point_line(point: dict | None, base: dict) -> str:
    if point is None:
        return "no epoch"
    tutorial = f", tutorial top-100 {point[TUTORIAL]:.4f}" if TUTORIAL in point else ""
    r10 = point["recall@10"]
    return (f"epoch {point['epoch']}: recall@10 {r10:.4f} ({r10 / base['recall@10']:.3f}x "
            f"EASE), @100 {point['recall@100']:.4f} ({point['recall@100'] / base['recall@100']:.3f}x){tutorial}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
