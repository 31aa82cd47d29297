"""New users served from their items: users held out of training, answered by the exported ScaNN SavedModel.

    python benchmarks/held_out_users.py --movielens ../shared/data/ml-100k

Draws --fraction of MovieLens 100K's users (seed --seed) and leaves every one of
their interactions out. On the rest, as a user would: `scaleout prepare --source
generic`, `scaleout train --preset history` (the query is built from the user's
items alone; --train-args=--user-embedding adds the id's row, which a new user
gets as the unknown user's), `scaleout index` (ScaNN) and `scaleout export --kind scann
brute_force --exclude-seen -k 100`. Each held-out user then gives --given of
their items, in two ways: their first ones (oldest first: a user who has just
arrived) and any ones (drawn at random, seed --seed: a user whose items come from
elsewhere); items no kept user rated are not candidates and are passed over. A
fresh process loads each SavedModel and asks for 100 items for all of them
through its `serve_items` signature. The recall of a user at k is the share of
their other items in those k (the given items are left out of every list),
averaged over the held-out users, with a 95% interval over users. Beside it, from
the same given items: the most popular items (training counts), and EASE and
iALS folded in (EASE: the given items' rows of its item x item weights summed;
iALS: the user's factors solved from the given items against the item factors,
the least-squares step of its own fit). EASE's lambda and iALS's setting are
chosen as `scaleout quality` chooses them, on a validation cut of the kept
users' training split. Writes benchmarks/results/held_out_users.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import scaleout  # noqa: F401  (TensorFlow's environment first)
from scaleout.bench.measure import machine
from scaleout.evaluate.new_users import (ease_folded_in, given_rows, hold_out, held_out_users, ials_folded_in, recall,
                                         top_k_excluding)
from scaleout.fsutil import write_json

RESULTS = Path(__file__).parent / "results" / "held_out_users.json"
KS = (10, 50, 100)
KINDS = ("scann", "brute_force")


def scaleout_command(*args) -> float:
    """Runs one `scaleout` command in its own process (as a user does); its seconds."""
    command = Path(sys.executable).parent / "scaleout"
    start = time.monotonic()
    done = subprocess.run([str(command), *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"scaleout {' '.join(map(str, args))} failed:\n{done.stderr[-4000:]}")
    return round(time.monotonic() - start, 1)


def serve(export: Path, requests: Path, out: Path) -> None:
    """In a fresh process: loads the SavedModel at ``export`` once, then answers every request of ``requests`` at
    once, for each way of giving items; ``load_seconds`` and, per way, ``query_seconds`` in the results."""
    from scaleout.serve.export import ITEMS_SIGNATURE, answer, load_saved_model

    start = time.monotonic()
    signature = load_saved_model(export, ITEMS_SIGNATURE)
    load_seconds = time.monotonic() - start
    asked, lists, seconds = json.loads(requests.read_text()), {}, {}
    for way, given in asked.items():
        start = time.monotonic()
        answers = answer(signature, [""] * len(given), given)
        seconds[way] = time.monotonic() - start
        lists[way] = [list(a.movie_ids) for a in answers]
    out.write_text(json.dumps({"load_seconds": load_seconds, "seconds": seconds, "lists": lists}))


def baselines(run: Path, ways: dict) -> tuple[dict[str, dict[str, list[list[str]]]], dict]:
    """(each way's lists from the baselines, the settings chosen). EASE's lambda and iALS's setting are chosen as
    `scaleout quality` chooses them, on the validation cut of the kept users' training split, and both are fitted
    on that split, as the model was trained. A held-out user's items are folded in: EASE sums the given items' rows
    of its item x item weights; iALS solves the user's factors from them against the fitted item factors
    (implicit's ``recalculate_user``, the least-squares step of its fit)."""
    import scaleout.evaluate.baselines as bl
    from scaleout.data.dataset import Dataset
    from scaleout.evaluate.protocols import load

    data = load(Dataset(run / "data"))
    train = data.matrix(data.train)
    row = {m: i for i, m in enumerate(data.item_ids)}
    pop, fit, val, chosen_on = bl.validation_setup(data, train)  # pop: training counts, also the tiebreak
    lam, lam_scores = bl.choose_ease(fit, val, pop)
    weights = bl.ease(train, lam)
    point, ials_scores = bl.choose_ials(fit, val, pop)
    ials = bl.ials_setting(point)
    model = bl.ials_fit(train, ials)
    k = max(KS)
    out = {}
    for way, users in ways.items():
        rows = given_rows([[row[m] for m in u.given] for u in users], len(row))
        out[way] = {name: [top_k_excluding(s, data.item_ids, set(u.given), k) for s, u in zip(scores, users)]
                    for name, scores in (("popularity", np.tile(pop, (len(users), 1))),
                                         ("EASE (folded in)", ease_folded_in(weights, rows)),
                                         ("iALS (folded in)", ials_folded_in(model, rows)))}
    # recorded as quality.json records them: each setting tried with its validation recall@10
    return out, {"ease": {"setting": {"lambda": lam}, "chosen_on": chosen_on, "tried": bl.tried_settings(
                     {v: {"lambda": v} for v in sorted(lam_scores)}, lam_scores)},
                 "ials": {"setting": ials, "chosen_on": chosen_on, "tried": bl.tried_settings(
                     {p: bl.ials_setting(p) for p in ials_scores}, ials_scores)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--fraction", type=float, default=0.1, help="share of users held out (default 0.1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--given", type=int, default=10, help="items each held-out user gives (default 10)")
    parser.add_argument("--preset", default="history")
    parser.add_argument("--train-args", default="", metavar="ARGS",
                        help='more `scaleout train` options, as one string after an = (--train-args=--user-embedding)')
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", nargs=3, type=Path, metavar=("EXPORT", "REQUESTS", "OUT"),
                        help=argparse.SUPPRESS)  # the fresh process's part
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return

    events = np.loadtxt(Path(args.movielens) / "u.data", dtype=np.int64)
    users, items, stamps = events[:, 0].astype(str), events[:, 1].astype(str), events[:, 3]
    held = hold_out(users, args.fraction, args.seed)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        run, csv = Path(tmp) / "run", Path(tmp) / "events.csv"
        keep = ~np.isin(users, held)
        lines = ["user_id,item_id,timestamp"] + [f"{u},{i},{t}" for u, i, t in zip(users[keep], items[keep],
                                                                                 stamps[keep])]
        csv.write_text("\n".join(lines) + "\n")
        seconds["prepare"] = scaleout_command("prepare", "--run", run, "--source", "generic", "--path", csv)
        seconds["train"] = scaleout_command("train", "--run", run, "--preset", args.preset,
                                            *shlex.split(args.train_args))
        seconds["index"] = scaleout_command("index", "--run", run)
        seconds["export"] = scaleout_command("export", "--run", run, "--kind", *KINDS, "--exclude-seen",
                                             "-k", max(KS))

        from scaleout.data.dataset import Dataset

        candidates = set(Dataset(run / "data").candidates.column("movie_id").to_pylist())
        shuffled = np.random.default_rng(args.seed).permutation(len(stamps))
        ways, dropped = {}, 0
        for way, order_by in (("first items", stamps), ("any items", shuffled)):
            ways[way], dropped = held_out_users(users, items, order_by, held, candidates, args.given)
        requests = Path(tmp) / "requests.json"
        requests.write_text(json.dumps({way: [list(u.given) for u in asked] for way, asked in ways.items()}))
        lists, serving = {way: {} for way in ways}, {}
        for kind in KINDS:
            answers = Path(tmp) / f"{kind}.json"
            start = time.monotonic()
            done = subprocess.run([sys.executable, __file__, "--serve", str(run / "export" / kind), str(requests),
                                   str(answers)], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"serving {kind} failed:\n{done.stderr[-4000:]}")
            got = json.loads(answers.read_text())
            for way in ways:
                lists[way][f"model, {kind} SavedModel"] = got["lists"][way]
            serving[kind] = {"process_seconds": round(time.monotonic() - start, 1),
                             "load_seconds": round(got["load_seconds"], 3),
                             "query_seconds": {w: round(v, 3) for w, v in got["seconds"].items()}}
        more, chosen = baselines(run, ways)
        for way in ways:
            lists[way].update(more[way])

    for way, asked in ways.items():
        for name, got in lists[way].items():
            if any(set(g) & set(u.given) or len(g) != max(KS) for g, u in zip(got, asked)):
                sys.exit(f"{name}, {way}: a list holds given items or fewer than {max(KS)} items")
    results = {"movielens": str(args.movielens), "preset": args.preset, "train_args": args.train_args,
               "machine": f"{machine()['cpu']}, {os.cpu_count()} cores",
               "held_out": {"fraction": args.fraction, "seed": args.seed, "users": int(len(held)),
                            "given": args.given, "interactions_not_candidates": dropped},
               "seconds": seconds, "serving": serving, "baselines_chosen": chosen, "ways": {}}
    for way, asked in ways.items():
        methods = {name: recall(got, asked, KS) for name, got in lists[way].items()}
        results["ways"][way] = {"users": len(asked), "other_items": int(sum(len(u.later) for u in asked)),
                                "methods": methods}
        print(f"\n{way}: {len(asked)} of {len(held)} held-out users give {args.given} items each; "
              f"{results['ways'][way]['other_items']:,} other items to find")
        print("| method | " + " | ".join(f"recall@{k}" for k in KS) + " |")
        print("|---|" + "---|" * len(KS))
        for name, m in methods.items():
            print(f"| {name} | " + " | ".join(f"{m[f'recall@{k}']:.4f} ± {m['ci95'][f'recall@{k}']:.4f}"
                                            for k in KS) + " |")
    print("seconds:", seconds, "serving:", serving)
    write_json(args.out, results)


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
