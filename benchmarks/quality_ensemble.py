"""Ensembles of whole models (seeds of a preset, or several presets) against one model, on quality_cuts.py's cuts.

    python benchmarks/quality_ensemble.py [--cuts 3] [--models 4] [--presets quality history] [--with-ease W ...]
    python benchmarks/quality_ensemble.py --models 1 --with-ials 1 2 4 8 [--init-stddev 0.005]
    python benchmarks/quality_ensemble.py --models 1 --with-ials 1 2 4 --ials-settings 128:3:30 256:3:30 512:6:60
    python benchmarks/quality_ensemble.py --prepared DIR --models 1 --with-ials 0.5 1 2 4

--prepared DIR: the cuts from a dataset `scaleout prepare` wrote (your own data; its test split never read) in
place of ml-100k's. With --with-ials, W is chosen by --popularity-prior's rule (of the weights that keep the
model's mean recall@100, the best mean recall@10; 0 when none): ``ials_weight_chosen``, what to train
``--ials-weight`` with.

Trains --models models on each cut (model and shuffle seeds 100, 101, ...: different initial weights and batch
orders; model i from the i-th of --presets, cycling), scores each model after its last epoch with seen items
excluded, then the ensembles of its first 2, 4, ... models: the sum of their logits (each model's scores over
its training temperature: the product of their softmax distributions), which one dot product of the
concatenated towers' outputs serves (the query side divided by the temperature). EASE (lambda 500) on the same
cuts beside them. With --with-ease, the first model's scores mixed with EASE's, per weight W: each user's row of
either standardised (mean 0, deviation 1), then model + W x EASE. No dot product serves that mixture; it bounds
what a two-tower taught by EASE (distilled from its scores) could reach.

With --with-ials, the first model's scores + W x iALS's (user factors . item factors, iALS chosen on each cut
as the quality report's baseline is, by its climb on a validation cut of the cut's training rows), per W: the
raw scores, so one dot product of the towers' outputs with iALS's factors beside them ([q; W u] . [c; v]) serves
it; scored under both protocols (the tutorial's top-100 too, issue 16's floor). --init-stddev S trains the
models with their tables drawn from a normal of that deviation (``ModelConfig.init_stddev``). --ials-settings
F:ALPHA:L2 ... scores each of these iALS settings (factors, alpha, regularization) too, alone and mixed at every
--with-ials weight, beside the climb's choice: the model is trained once a cut, so a grid costs iALS's fits.

Prints each cut's figures and the means over cuts; writes benchmarks/results/quality/ensemble.json. The test
split is not used.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

import scaleout  # noqa: F401  (TensorFlow's environment first)
from quality_cuts import EASE_LAMBDA, METRICS, TUTORIAL, ease_metrics, ease_weights
from quality_search import add_data_options, data_named, validation_cuts
from scaleout.bench.measure import machine
from scaleout.evaluate.baselines import choose_ials, ials_fit, ials_setting, validation_setup
from scaleout.fsutil import write_json

RESULTS = Path(__file__).parent / "results" / "quality" / "ensemble.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_options(parser)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--presets", nargs="+", default=["quality"])
    parser.add_argument("--with-ease", type=float, nargs="*", default=[], metavar="W",
                        help="also score the first model's standardised scores + W x EASE's, per W")
    parser.add_argument("--with-ials", type=float, nargs="*", default=[], metavar="W",
                        help="also score the first model's scores + W x iALS's (raw: a dot product), per W, under "
                             "both protocols")
    parser.add_argument("--ials-settings", nargs="*", default=[], type=ials_option, metavar="F:ALPHA:L2",
                        help="with --with-ials, also these iALS settings (factors:alpha:regularization), each alone "
                             "and mixed at every weight")
    parser.add_argument("--init-stddev", type=float, default=None, metavar="S",
                        help="the models' tables drawn from a normal of deviation S (default the preset's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.ials_settings and not args.with_ials:
        parser.error("--ials-settings scores iALS mixtures: give the weights with --with-ials")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [m for m in (2, 4, 8, 16) if m <= args.models]  # the ensembles scored
    with tempfile.TemporaryDirectory() as tmp:
        per_cut = [cut_row(args, cut, dataset, data, sizes) for cut, (dataset, data) in
                   enumerate(validation_cuts(args.movielens, Path(tmp), range(args.cuts), args.prepared))]
    mean = means(args, per_cut, sizes)
    print(f"means over {args.cuts} cuts (one model of a preset: over its models of every cut):")
    for name, r in mean.items():
        label = ("EASE" if name == "ease" else name if name.startswith(("one ", "iALS ")) else
                 f"model 0 {name}" if name.startswith("+") else f"model 0 + {name}" if " x iALS " in name else
                 f"ensemble of {name}")
        print(f"  {label:22} recall@10 {r['recall@10']:.4f} ({r['recall@10'] / mean['ease']['recall@10']:.3f}x EASE), "
              f"@100 {r['recall@100']:.4f} ({r['recall@100'] / mean['ease']['recall@100']:.3f}x)"
              + (f", tutorial top-100 {r[TUTORIAL]:.4f}" if TUTORIAL in r else ""))
    chosen = choose_weight(mean, args.with_ials)
    if args.with_ials:
        print("W by the rule (the best mean recall@10 of the weights that keep the model's mean recall@100): "
              f"{chosen:g}" + (" (none lifts recall@10 and keeps recall@100)" if chosen == 0 else ""), flush=True)
    write_json(args.out, {"machine": f"{machine()['cpu']}, {os.cpu_count()} cores", "data": data_named(args),
                          "cuts": args.cuts,
                          "models": args.models, "presets": args.presets, "ease_lambda": EASE_LAMBDA,
                          "with_ease": args.with_ease, "with_ials": args.with_ials,
                          "ials_settings": [dict(zip(("factors", "alpha", "regularization"), setting))
                                            for setting in args.ials_settings],
                          "init_stddev": args.init_stddev, "mean": mean,
                          **({"ials_weight_chosen": chosen} if args.with_ials else {}),
                          "per_cut": per_cut})


def ranked(scores: np.ndarray, data, seen, tutorial: bool = False) -> dict:
    """recall@10 and @100 of ``scores`` [users + 1, items] (the last row a user outside the vocabulary's) on the
    cut's held-out rows, seen items excluded; with ``tutorial``, the tutorial protocol's top-100 too."""
    from scaleout.evaluate.protocols import rank_metrics, rank_protocols

    users = len(data.user_ids)

    def score(u):
        return scores[np.where(u >= 0, u, users)]
    if not tutorial:
        m = rank_metrics(score, data.test, seen, ks=(10, 100), ndcg_ks=())
        return {k: m[k] for k in METRICS}
    m = rank_protocols(score, data.test, {"x": seen, "t": None}, ks=(10, 100), ndcg_ks=())
    return {**{k: m["x"][k] for k in METRICS}, TUTORIAL: m["t"]["recall@100"]}


def cut_row(args, cut: int, dataset, data, sizes: list[int]) -> dict:
    """One cut's figures: EASE, each model, the ensembles of ``sizes`` models, and the mixtures asked for."""
    from scaleout.evaluate.quality import tower_scorer
    from scaleout.train.local import fit
    from scaleout.train.presets import configs

    seen, users = data.matrix(data.train), len(data.user_ids)
    weights = ease_weights(seen)
    row = {"cut": cut, "ease": ease_metrics(data, weights), "models": []}
    scores = []
    for i in range(args.models):
        preset = args.presets[i % len(args.presets)]
        over = {} if args.init_stddev is None else {"init_stddev": args.init_stddev}
        model_cfg, train_cfg = configs(preset, {"seed": 100 + i, **over}, {"seed": 100 + i})
        model, _ = fit(dataset, model_cfg, train_cfg)
        score = tower_scorer(model.query_tower, model.candidate_tower, data)
        scores.append(np.asarray(score(np.append(np.arange(users), -1)), np.float32) / model_cfg.temperature)
        row["models"].append({"preset": preset, **ranked(scores[-1], data, seen)})
        print(f"cut {cut}, model {i} ({preset}): recall@10 {row['models'][-1]['recall@10']:.4f}, "
              f"@100 {row['models'][-1]['recall@100']:.4f}", flush=True)
    row["ensembles"] = {str(m): ranked(sum(scores[:m]), data, seen) for m in sizes}
    for m, r in row["ensembles"].items():
        print(f"cut {cut}, ensemble of {m}: recall@10 {r['recall@10']:.4f}, @100 {r['recall@100']:.4f}",
              flush=True)
    if args.with_ease:
        teacher = standardised(np.vstack([np.asarray(seen @ weights, np.float32),
                                          np.zeros((1, seen.shape[1]), np.float32)]))
        row["with_ease"] = {str(w): ranked(standardised(scores[0]) + w * teacher, data, seen)
                            for w in args.with_ease}
        for w, r in row["with_ease"].items():
            print(f"cut {cut}, model 0 + {w} x EASE: recall@10 {r['recall@10']:.4f}, "
                  f"@100 {r['recall@100']:.4f}", flush=True)
    if args.with_ials:
        row.update(ials_mixtures(args, cut, data, seen, scores[0]))
    return row


def ials_mixtures(args, cut: int, data, seen, model_scores: np.ndarray) -> dict:
    """The cut's iALS (the climb's choice, and each of --ials-settings) alone and mixed with the first model's
    scores at each --with-ials weight, under both protocols."""
    setting, ials = ials_scores(data, seen)
    print(f"cut {cut}, iALS by the quality report's climb: factors {setting['factors']}, alpha "
          f"{setting['alpha']:g}, L2 {setting['regularization']:g}", flush=True)
    found = {"ials_setting": setting,
             "with_ials": {str(w): ranked(model_scores + w * ials, data, seen, tutorial=True)
                           for w in [0.0, *args.with_ials]},
             "ials_settings": {}}
    for w, r in found["with_ials"].items():
        print(f"cut {cut}, model 0 + {w} x iALS: recall@10 {r['recall@10']:.4f}, @100 "
              f"{r['recall@100']:.4f}, tutorial top-100 {r[TUTORIAL]:.4f}", flush=True)
    for setting in args.ials_settings:
        ials = fitted_scores(seen, setting)
        found["ials_settings"][setting_name(setting)] = {
            "alone": ranked(ials, data, seen, tutorial=True),
            **{str(w): ranked(model_scores + w * ials, data, seen, tutorial=True) for w in args.with_ials}}
        print(f"cut {cut}, iALS {setting_name(setting)}: " + "; ".join(
            f"{w}: {r['recall@10']:.4f} / {r['recall@100']:.4f} / {r[TUTORIAL]:.4f}"
            for w, r in found["ials_settings"][setting_name(setting)].items()), flush=True)
    return found


def means(args, per_cut: list[dict], sizes: list[int]) -> dict:
    """Each figure's mean over the cuts, keyed as printed."""
    def over_cuts(pick, metrics=METRICS) -> dict:
        return {k: float(np.mean([pick(c)[k] for c in per_cut])) for k in metrics}

    mean = {"ease": over_cuts(lambda c: c["ease"])}
    mean.update({f"one {p}": {k: float(np.mean([m[k] for c in per_cut for m in c["models"] if m["preset"] == p]))
                              for k in METRICS} for p in dict.fromkeys(args.presets[:args.models])})
    mean.update({str(m): over_cuts(lambda c, m=m: c["ensembles"][str(m)]) for m in sizes})
    mean.update({f"+ {w} x EASE": over_cuts(lambda c, w=w: c["with_ease"][str(w)]) for w in args.with_ease})
    ials_weights = [0.0, *args.with_ials] if args.with_ials else []  # 0: the model alone, scored as the mixes are
    both = (*METRICS, TUTORIAL)
    mean.update({f"+ {w} x iALS": over_cuts(lambda c, w=w: c["with_ials"][str(w)], both) for w in ials_weights})
    mean.update({f"{w} x iALS {setting_name(setting)}" if w != "alone" else f"iALS {setting_name(setting)} alone":
                 over_cuts(lambda c, s=setting_name(setting), w=w: c["ials_settings"][s][w], both)
                 for setting in args.ials_settings for w in ["alone", *map(str, args.with_ials)]})
    return mean


def ials_scores(data, seen) -> tuple[dict, np.ndarray]:
    """(iALS's setting, its scores [users + 1, items], the last row a user outside the vocabulary's: zeros),
    iALS chosen and fitted on ``seen`` as the quality report's baseline is (scaleout.evaluate.baselines)."""
    pop, fit_m, val, _ = validation_setup(data, seen)
    setting = ials_setting(choose_ials(fit_m, val, pop)[0])
    return setting, fitted_scores(seen, (setting["factors"], setting["alpha"], setting["regularization"]))


def fitted_scores(seen, setting: tuple[int, float, float]) -> np.ndarray:
    """iALS's scores [users + 1, items] fitted on ``seen`` with (factors, alpha, regularization); the last row, a
    user outside the vocabulary's, zeros."""
    factors, alpha, l2 = setting
    model = ials_fit(seen, {"factors": factors, "alpha": alpha, "regularization": l2})
    user_factors, item_factors = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return np.vstack([user_factors @ item_factors.T, np.zeros((1, seen.shape[1]))]).astype(np.float32)


def ials_option(text: str) -> tuple[int, float, float]:
    """``F:ALPHA:L2`` -> (factors, alpha, regularization), checked."""
    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        factors, alpha, l2 = int(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"iALS setting {text!r}: expected FACTORS:ALPHA:L2, e.g. 128:3:30")
    if factors < 1 or alpha <= 0 or l2 < 0:
        raise argparse.ArgumentTypeError(f"iALS setting {text!r}: expected factors >= 1, alpha > 0 and L2 >= 0")
    return factors, alpha, l2


def setting_name(setting: tuple[int, float, float]) -> str:
    return f"{setting[0]}:{setting[1]:g}:{setting[2]:g}"


def choose_weight(mean: dict, weights: list[float]) -> float:
    """``--ials-weight``'s W by the rule ``--popularity-prior``'s beta is chosen by (quality_cuts.choose_prior): of
    the weights whose mean recall@100 over the cuts is no lower than the model's own (W 0), the one with the best
    mean recall@10 (0 when none lifts it)."""
    if not weights:
        return 0.0
    own = mean["+ 0.0 x iALS"]
    best, chosen = own["recall@10"], 0.0
    for w in sorted(weights):
        point = mean[f"+ {w} x iALS"]
        if point["recall@100"] >= own["recall@100"] and point["recall@10"] > best:
            best, chosen = point["recall@10"], float(w)
    return chosen


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row less its mean, over its standard deviation (a row of one value: zeros)."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    deviation = centred.std(axis=1, keepdims=True)
    return centred / np.where(deviation > 0, deviation, 1.0)


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
