"""iALS's whole lattice of settings on the validation cut, and where the quality report's climb stops on it.

    python benchmarks/ials_lattice.py --movielens ../shared/data/ml-100k
    python benchmarks/ials_lattice.py --synthetic 1000209   # MovieLens 1M's shape, synthetic

The honest evaluation tunes iALS (``scaleout.evaluate.baselines``) by climbing
a lattice: alpha = 3 x 1.5^a, the L2 = alpha x 10 x sqrt(2)^r. This scores
every point of a block of it (``--alpha-steps``, ``--ratio-steps``; default
a in -3..3, r in -3..5) with the report's own validation recall@10 (the same
cut, users, fits and tiebreak), then runs the climb twice on those scores:
with the four axis moves alone, and with the report's moves
(``CLIMB_MOVES``); a point the climb asks for outside the block is fitted as
well. It prints the lattice, the best point, each climb's stop and fits,
and each stop's share of the best; writes
benchmarks/results/quality/ials_lattice_<data>.json and a heat map with both
climbs' points, benchmarks/reports/quality/ials_lattice_<data>.png. The data
are prepared as ``quality_preset.py`` prepares them (the tutorial's random
80/20 split, seed 42). One fit takes about 0.5 s on ml-100k and 4-7 s at
MovieLens 1M's shape here: 63 points, about 30 s and 6 minutes.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import scaleout  # noqa: F401  (TensorFlow's environment first)
from quality_preset import ML1M, source_config  # noqa: E402  (beside this script)
from scaleout.bench.measure import machine
from scaleout.fsutil import write_json

RESULTS = Path(__file__).parent / "results" / "quality"
REPORTS = Path(__file__).parent / "reports" / "quality"
AXIS_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--synthetic", type=int, default=0, metavar="INTERACTIONS")
    parser.add_argument("--synthetic-users", type=int, default=ML1M["users"])
    parser.add_argument("--synthetic-items", type=int, default=ML1M["items"])
    parser.add_argument("--alpha-steps", type=int, nargs=2, default=(-3, 3), metavar=("FROM", "TO"))
    parser.add_argument("--ratio-steps", type=int, nargs=2, default=(-3, 5), metavar=("FROM", "TO"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=REPORTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    name = f"synthetic-{args.synthetic}" if args.synthetic else Path(args.movielens).name

    import scaleout.evaluate.baselines as bl
    from scaleout.data.dataset import Dataset
    from scaleout.data.prepare import prepare
    from scaleout.evaluate.protocols import load

    with tempfile.TemporaryDirectory() as tmp:
        prepare(source_config(args.movielens, args.synthetic, args.synthetic_users, args.synthetic_items),
                Path(tmp) / "data")
        data = load(Dataset(Path(tmp) / "data"))
    pop, fit_m, val, chosen_on = bl.validation_setup(data, data.matrix(data.train))
    scores: dict[tuple[int, int], float] = {}

    def score(point: tuple[int, int]) -> float:
        if point not in scores:
            start, setting = time.monotonic(), bl.ials_setting(point)
            scores[point] = bl._validation_recall(setting, lambda s: bl._ials_scorer(fit_m, s), fit_m, val, pop)
            print(f"  {point}: {setting} recall@10 {scores[point]:.4f} "
                  f"({time.monotonic() - start:.1f} s; {len(scores)} fitted)", flush=True)
        return scores[point]

    alphas = range(args.alpha_steps[0], args.alpha_steps[1] + 1)
    ratios = range(args.ratio_steps[0], args.ratio_steps[1] + 1)
    print(f"{name}: {len(alphas) * len(ratios)} points of the lattice, validation recall@10", flush=True)
    for a in alphas:
        for r in ratios:
            score((a, r))
    climbs = {}
    for label, moves in (("axis moves", AXIS_MOVES), ("the report's moves", bl.CLIMB_MOVES)):
        here, seen = bl.climb(score, moves=moves)
        climbs[label] = {"moves": [list(m) for m in moves], "stop": list(here), "setting": bl.ials_setting(here),
                         "recall@10": scores[here], "fits": len(seen), "points": [list(p) for p in seen]}
    best = max(scores, key=scores.get)
    print_lattice(scores, alphas, ratios, best)
    for label, c in climbs.items():
        print(f"climb with {label}: stops at {tuple(c['stop'])} {c['setting']}, recall@10 {c['recall@10']:.4f} "
              f"({c['recall@10'] / scores[best]:.3f}x the lattice's best), {c['fits']} fits")
    result = {"data": name, "machine": f"{machine()['cpu']}, {os.cpu_count()} cores",
              "validation_users": chosen_on["users"], "factors": bl.IALS_FACTORS,
              "lattice": [{"step": list(p), **bl.ials_setting(p), "recall@10": v} for p, v in sorted(scores.items())],
              "best": {"step": list(best), **bl.ials_setting(best), "recall@10": scores[best]}, "climbs": climbs}
    write_json(args.out / f"ials_lattice_{name}.json", result)
    plot(scores, climbs, best, args.plot / f"ials_lattice_{name}.png", name)
    print(f"wrote {args.out / f'ials_lattice_{name}.json'} and {args.plot / f'ials_lattice_{name}.png'}")


def print_lattice(scores: dict, alphas, ratios, best) -> None:
    """Rows alpha, columns the L2's ratio to alpha; the best point starred."""
    import scaleout.evaluate.baselines as bl

    ratio = lambda r: bl.IALS_START[1] * bl.IALS_STEPS[1] ** r  # noqa: E731
    print("alpha \\ L2/alpha " + " ".join(f"{ratio(r):>8.3g}" for r in ratios))
    for a in alphas:
        cells = [f"{scores[(a, r)]:.4f}" + ("*" if (a, r) == best else " ") for r in ratios]
        print(f"{bl.ials_setting((a, 0))['alpha']:>16g} " + " ".join(f"{c:>8}" for c in cells))


def plot(scores: dict, climbs: dict, best, path: Path, name: str) -> None:
    """A heat map of the validation recall over the lattice, each climb's fitted points and stop marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a_lo, a_hi = min(p[0] for p in scores), max(p[0] for p in scores)
    r_lo, r_hi = min(p[1] for p in scores), max(p[1] for p in scores)
    grid = np.full((a_hi - a_lo + 1, r_hi - r_lo + 1), np.nan)
    for (a, r), v in scores.items():
        grid[a - a_lo, r - r_lo] = v
    fig, ax = plt.subplots(figsize=(8, 5.5))
    image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto",
                      extent=(r_lo - 0.5, r_hi + 0.5, a_lo - 0.5, a_hi + 0.5))
    fig.colorbar(image, label="validation recall@10")
    styles = (("s", "darkorange", -0.15), ("o", "red", 0.15))
    for (label, c), (marker, colour, offset) in zip(climbs.items(), styles):
        points = np.array(c["points"])
        ax.scatter(points[:, 1] + offset, points[:, 0], marker=marker, facecolors="none", edgecolors=colour,
                   label=f"{label}: {c['fits']} fits, stop {c['recall@10']:.4f}")
        ax.scatter([c["stop"][1] + offset], [c["stop"][0]], marker=marker, color=colour, s=80)
    ax.scatter([best[1]], [best[0]], marker="*", color="yellow", s=160, label=f"the lattice's best {scores[best]:.4f}")
    ax.set_xlabel("r: L2 = alpha x 10 x sqrt(2)^r")
    ax.set_ylabel("a: alpha = 3 x 1.5^a")
    ax.set_title(f"iALS on {name}: the climb from (0, 0) over the whole lattice")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
