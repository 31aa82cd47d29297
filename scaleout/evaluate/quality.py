"""``scaleout quality``: the run's model beside the baselines, under both protocols, as a report.

See scaleout.evaluate.protocols for what is measured and scaleout.evaluate.baselines
for the baselines. Output: RUN/metrics/quality.json, a table, a headline.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from scaleout.data.dataset import Dataset
from scaleout.evaluate.baselines import VALIDATION_METRIC, baselines
from scaleout.evaluate.paired import over_each, ratio_text, take_per_user
from scaleout.evaluate.protocols import KS, NDCG_KS, PROTOCOLS, Data, evaluate_scores, load, sample_users
from scaleout.fsutil import write_json
from scaleout.names import BASELINES
from scaleout.rundir import RunDir
from scaleout.tfenv import tf
from scaleout.train.run import towers_made_from
from scaleout.train.saved import Towers
from scaleout.train.towers import embed_users

log = logging.getLogger(__name__)


def tower_scorer(query_tower, candidate_tower, data: Data):
    """Scores of a two-tower model: the query tower over the user vocabulary (and one unknown user; each
    user at their latest training timestamp), the candidate tower over the candidates."""
    users = embed_users(query_tower, np.append(data.user_ids, ""))
    items = candidate_tower(tf.constant(data.item_ids.astype(object)), training=False).numpy()

    def score(u):
        return users[np.where(u >= 0, u, len(data.user_ids))] @ items.T
    return score


def model_scorer(towers, data: Data):
    return tower_scorer(towers.query, towers.candidate, data)


def quality_report(run: RunDir, which: tuple[str, ...] = BASELINES, sample: int = 0, seed: int = 0,
                   ease_max_gib: float = 0.0) -> dict:
    """The model of RUN and the baselines under both protocols; writes RUN/metrics/quality.json.

    ``sample`` > 0 evaluates the test rows of that many test users drawn at random (with ``seed``) instead of
    every one, and reports 95% intervals (``ci95``) beside each metric; a baseline that does not fit in
    memory is skipped with a note (``ease_max_gib``)."""
    start = time.monotonic()
    dataset = Dataset(run.data)
    towers = Towers.load(run.model, dataset)
    data = load(dataset)
    population = 0
    report = {"test_interactions": int(len(data.test.users)), "candidates": int(len(data.item_ids)),
              "ks": list(KS), "ndcg_ks": list(NDCG_KS), "protocols": list(PROTOCOLS)}
    if sample:
        test, population = sample_users(data.test, sample, seed)
        report["sample"] = {"users": int(len(np.unique(test.users))), "of_users": population,
                            "rows": int(len(test.users)), "of_rows": int(len(data.test.users)), "seed": seed,
                            "confidence": 0.95}
        log.info("quality: a sample of %d of %d test users (%d of %d rows), seed %d", report["sample"]["users"],
                 population, len(test.users), len(data.test.users), seed)
        data = Data(data.user_ids, data.item_ids, data.train, test)
    # A temporal split's later users are often new: neither the model nor a baseline has their history, so
    # every method answers them as it answers anyone unknown (the model with its unknown-user row, the
    # baselines with popularity).
    report["test_rows_of_unknown_users"] = int((data.test.users < 0).sum())
    report["model"] = evaluate_scores(model_scorer(towers, data), data, population_users=population,
                                      label="quality, model", per_user=True)
    report["baselines"] = baselines(data, which, population, ease_max_gib, per_user=True)
    # the model over each baseline, paired over the test users; the per-user sums are not kept in the JSON
    theirs = take_per_user(report["baselines"])
    report["paired"] = over_each(report["model"].pop("per_user"), theirs, population)
    report["seconds"] = round(time.monotonic() - start, 1)
    report["made_from"] = towers_made_from(run)
    write_json(run.quality_metrics, report)
    return report


def headline(report: dict) -> dict:
    """recall@10 and @100 of the model and each baseline (those that ran), under both protocols."""
    methods = {"model": report["model"], **_ran(report)}
    return {name: {p: {k: round(m[p][k], 4) for k in ("recall@10", "recall@100")} for p in PROTOCOLS}
            for name, m in methods.items()}


def _ran(report: dict) -> dict:
    return {name: b for name, b in report["baselines"].items() if "skipped" not in b}


def quality_sentence(report: dict) -> str:
    """One line: the model's recall@10/@100 with seen items excluded and its top-100, beside the best baseline."""
    m = report["model"]
    text = (f"model: recall@10 {m['exclude_seen']['recall@10']:.4f}, @100 {m['exclude_seen']['recall@100']:.4f} "
            f"seen excluded; top-100 {m['tutorial']['recall@100']:.4f} tutorial protocol")
    if _ran(report):
        name, b = max(_ran(report).items(), key=lambda kv: kv[1]["exclude_seen"]["recall@10"])
        text += f"; best baseline {name}: {b['exclude_seen']['recall@10']:.4f}, {b['exclude_seen']['recall@100']:.4f}"
        paired = report.get("paired", {}).get(name, {}).get("exclude_seen")
        if paired:
            text += (f" (model / {name}, paired 95%: recall@10 {ratio_text(paired['recall@10'])}, "
                     f"@100 {ratio_text(paired['recall@100'])})")
    return text


def chosen_line(baseline: dict) -> str:
    """How a baseline's setting was chosen: the setting, its validation recall@10, among how many tried, on how
    many users' validation rows; where every fit diverged (no score to choose by), the line says so."""
    setting = ", ".join(f"{key} {value:g}" for key, value in baseline["setting"].items())
    best = next(t[VALIDATION_METRIC] for t in baseline["tried"]
                if all(t[key] == value for key, value in baseline["setting"].items()))
    on = baseline["chosen_on"]
    users = f"{on['users']:,}" + (f" of {on['of_users']:,}" if on["users"] < on["of_users"] else "")
    score = "none: every fit diverged" if best is None else f"{best:.4f}"
    return (f"chosen: {setting} (validation recall@10 {score}, the best of {len(baseline['tried'])} tried on "
            f"{users} users' validation rows)")


def format_report(report: dict) -> str:
    """A plain table: one row per method and protocol."""
    cols = [f"recall@{k}" for k in report["ks"]] + [f"ndcg@{k}" for k in report["ndcg_ks"]]
    methods = {"model": report["model"], **report["baselines"]}
    width = max(12, *(len(name) for name in methods))
    lines = [f"{'method':<{width}} {'protocol':<13} " + " ".join(f"{c:>10}" for c in cols)]
    for name, m in methods.items():
        if "skipped" in m:
            lines.append(f"{name:<{width}} skipped: {m['skipped']}")
            continue
        for protocol in PROTOCOLS:
            lines.append(f"{name:<{width}} {protocol:<13} " + " ".join(f"{m[protocol][c]:>10.4f}" for c in cols))
            if "ci95" in m[protocol]:
                lines.append(f"{'':<{width}} {'  95% +/-':<13} " + " ".join(
                    f"{(m[protocol]['ci95'][c][1] - m[protocol]['ci95'][c][0]) / 2:>10.4f}" for c in cols))
        if "tried" in m:
            lines.append(f"{'':<{width}} {chosen_line(m)}")
    if report.get("paired"):
        lines.append("model / baseline on the same test users, 95% interval paired over the users:")
        for name, protocols in report["paired"].items():
            for protocol, metrics in protocols.items():
                lines.append(f"  {name:<{width - 2}} {protocol:<13} " + "  ".join(
                    f"{metric} {ratio_text(paired)}" for metric, paired in metrics.items()))
    unknown = report.get("test_rows_of_unknown_users", 0)
    if unknown:
        rows = report.get("sample", {}).get("rows", report["test_interactions"])
        lines.append(f"{unknown:,} of {rows:,} test rows ({unknown / rows:.0%}) are of users outside the training "
                     "vocabulary, answered without their history: the model with its unknown-user row, the "
                     "baselines with popularity")
    if "sample" in report:
        s = report["sample"]
        lines.append(f"a sample of {s['users']:,} of {s['of_users']:,} test users ({s['rows']:,} of {s['of_rows']:,} "
                     f"test rows, seed {s['seed']}); 95% intervals over users, in quality.json as ci95")
    return "\n".join(lines)
