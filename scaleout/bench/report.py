"""Result files -> a Markdown report with PNG plots and a JSON summary (reads only result files).

Sections: the machine; the issue's targets checked on the results; per dataset
a table of every index at its fastest setting reaching recall@10 >= 0.95 (and
at its best recall otherwise) and recall-vs-throughput frontier plots at k = 10
and 100; p50 latency against catalogue size; brute force against the
memory-bandwidth floor; the ScaNN tuner's choice per k served (10, 100, 1000),
per dataset and for the indexer's defaults; the GPU half against its floors and
the CPU when GPU results are given, and which device is cheapest.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from scaleout.bench.algorithms import EXACT
from scaleout.bench.cost import Prices
from scaleout.bench.formatting import LABELS, fmt
from scaleout.errors import ConfigError
from scaleout.fsutil import atomic_dir, write_json

TARGET = 0.95
KS = (10, 100, 1000)  # the ks a retrieval stage serves: the tuner chooses per k
SUMMARY_JSON = "summary.json"
def _color(algo: str):
    """One colour per index on every plot."""
    import matplotlib

    return matplotlib.colormaps["tab10"](list(LABELS).index(algo) % 10)


def load_results(results: str | Path) -> list[dict]:
    out = []
    for f in sorted(Path(results).rglob("*.json")):
        record = json.loads(f.read_text())
        if "algorithm" in record and not record.get("duplicate_of_earlier_setting"):
            out.append(record)
    return out


def settings(r: dict) -> str:
    args = {**r["build_args"], **r["applied_query_args"]}
    return ", ".join(f"{k}={v}" for k, v in sorted(args.items())) or "defaults"


def at_k(r: dict, k: int) -> tuple[float, float, float] | None:
    """(recall@k, p50 ms, mean ms) of a record's searches for k results, or None where it has none: records
    made before searches were timed per k hold only the timed k (10)."""
    by = r.get("by_k", {}).get(str(k))
    if by:
        lat, recall = by["latency"], by["recall"]
    elif k == r.get("k", 10) and f"recall@{k}" in r:
        lat, recall = r["latency"], r[f"recall@{k}"]
    else:
        return None
    return recall, lat["p50_ms"], lat.get("mean_ms", lat["p50_ms"])


def best_at(records: list[dict], target: float = TARGET, k: int = 10) -> dict | None:
    """The record with the lowest p50 latency of searches for k among those reaching recall@k >= target
    (None if none do)."""
    ok = [r for r in records if (m := at_k(r, k)) and m[0] >= target]
    return min(ok, key=lambda r: at_k(r, k)[1]) if ok else None


def tune(results: list[dict], target: float = TARGET, ks: tuple[int, ...] = KS) -> dict:
    """ScaNN's settings meeting recall@k >= target at the lowest p50 latency of searches for k, per k: per
    dataset, and the one setting that meets it on every synthetic dataset of 100K or more at the lowest
    geometric-mean latency among builds a SavedModel can carry (the indexer's defaults: a row of
    IndexConfig.search_by_k per k). The first k
    chooses the build too; the other ks choose among that build's search settings (one index serves every
    k). ``per_dataset`` and ``defaults`` repeat the first k's."""
    scann = [r for r in results if r["algorithm"] == "scann"]
    large = sorted({r["dataset"] for r in scann if r["dataset"].startswith("synthetic") and r["n"] >= 100_000})
    out, build = {"target_recall": target, "by_k": {}}, None
    for k in ks:
        recs = [r for r in scann if at_k(r, k) and (build is None or r["build_args"] == build)]
        if not recs:
            continue
        per_dataset = {}
        for name in sorted({r["dataset"] for r in recs}):
            best = best_at([r for r in recs if r["dataset"] == name], target, k)
            per_dataset[name] = None if best is None else {
                "settings": {**best["build_args"], **best["applied_query_args"]}, f"recall@{k}": at_k(best, k)[0],
                "p50_ms": at_k(best, k)[1]}
        by_setting = defaultdict(dict)
        for r in recs:
            if r["dataset"] in large and exportable(r["build_args"]):
                by_setting[json.dumps([r["build_args"], r["query_args"]], sort_keys=True)][r["dataset"]] = r
        common = []
        for key, rs in by_setting.items():
            if len(rs) == len(large) and all(at_k(r, k)[0] >= target for r in rs.values()):
                common.append((float(np.exp(np.mean([np.log(at_k(r, k)[1]) for r in rs.values()]))), key))
        defaults = None
        if common:
            gm, key = min(common)
            b, q = json.loads(key)
            defaults = {"settings": {**b, **q}, "build": b, "query": q, "datasets": large, "geomean_p50_ms": gm,
                        f"min_recall@{k}": min(at_k(r, k)[0] for r in by_setting[key].values()),
                        "per_dataset": {d: {"recall": at_k(r, k)[0], "p50_ms": at_k(r, k)[1]}
                                        for d, r in sorted(by_setting[key].items())}}
            build = build or b
        out["by_k"][str(k)] = {"per_dataset": per_dataset, "defaults": defaults}
    first = out["by_k"].get(str(ks[0]), {"per_dataset": {}, "defaults": None})
    out["per_dataset"], out["defaults"] = first["per_dataset"], first["defaults"]
    return out


def exportable(build: dict) -> bool:
    """Whether a ScaNN SavedModel can carry an index of this build (not SOAR, not bf16 reordering): only such
    builds can be the indexer's defaults."""
    return not build.get("soar_lambda") and build.get("reorder_dtype", "float32") != "bfloat16"


def search_row(defaults: dict, k: int) -> tuple:
    """The IndexConfig.search_by_k row the tuner's defaults for k stand for."""
    q = defaults["query"]
    return (k, q["leaves_fraction"], q.get("points_per_result", 0), q["reorder_per_k"])


def _plot_frontiers(results, name, path):
    """recall@k against one-query throughput of searches for k, k = 10 and 100 side by side (indexes measured
    at k = 10 only are left out of the second)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, k in zip(axes, (10, 100)):
        for algo in sorted({r["algorithm"] for r in results}):
            pts = [(m[0], 1e3 / m[2]) for r in results if r["algorithm"] == algo and (m := at_k(r, k))]
            if not pts:
                continue
            front, best = [], -1.0
            for rec, qps in sorted(pts, key=lambda p: -p[0]):  # Pareto frontier: highest recall first
                if qps > best:
                    front.append((rec, qps))
                    best = qps
            xs, ys = zip(*sorted(front))
            ax.plot(xs, ys, marker="o" if algo not in EXACT else "s", label=LABELS.get(algo, algo),
                    color=_color(algo))
        ax.axvline(TARGET, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k} (searches for {k})")
        ax.set_ylabel(f"queries/s, searches for {k} (one at a time, 1 thread)")
        ax.set_title(f"{name}, k = {k}")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_scaling(results, path):
    import matplotlib.pyplot as plt

    synth = [r for r in results if r["dataset"].startswith("synthetic")]
    dims = sorted({r["dim"] for r in synth})
    fig, axes = plt.subplots(1, max(1, len(dims)), figsize=(4.2 * max(1, len(dims)), 4), squeeze=False, sharey=True)
    for ax, dim in zip(axes[0], dims):
        for algo in sorted({r["algorithm"] for r in synth}):
            pts = []
            for n in sorted({r["n"] for r in synth if r["dim"] == dim}):
                best = best_at([r for r in synth if r["algorithm"] == algo and r["dim"] == dim and r["n"] == n])
                if best:
                    pts.append((n, best["latency"]["p50_ms"]))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=LABELS.get(algo, algo), color=_color(algo))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"dim {dim}")
        ax.set_xlabel("candidates")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"p50 ms at recall@10 >= {TARGET}")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets(results: list[dict], dataset: str = "synthetic-1M-32") -> list[str]:
    """The issue's acceptance checks, stated plainly from the results of one dataset."""
    rs = [r for r in results if r["dataset"] == dataset]
    if not rs:
        return [f"- {dataset}: not in these results."]
    lines = []
    bf = [r for r in rs if r["algorithm"] == "bruteforce"]
    scann = best_at([r for r in rs if r["algorithm"] == "scann"])
    hnsw = best_at([r for r in rs if r["algorithm"] == "faiss_hnsw"])
    if bf and scann:
        ratio = scann["qps"]["1"] / bf[0]["qps"]["1"]
        lines.append(f"- {dataset}, one thread: ScaNN at recall@10 {scann['recall@10']:.3f} answers "
                     f"{scann['qps']['1']:,.0f} queries/s, exact brute force {bf[0]['qps']['1']:,.1f}: **{ratio:,.0f}x** "
                     f"({'meets' if ratio >= 100 else 'misses'} the 100x target).")
    if scann and hnsw:
        q = scann["qps"]["1"] / hnsw["qps"]["1"]
        b = scann["build_seconds"] / hnsw["build_seconds"]
        lines.append(f"- {dataset}, at recall@10 >= {TARGET}: ScaNN {scann['qps']['1']:,.0f} q/s vs FAISS HNSW "
                     f"{hnsw['qps']['1']:,.0f} q/s (**{q:.2f}x**, {'meets' if q >= 1 else 'misses'} the >= 1x target); "
                     f"build {scann['build_seconds']:.1f} s vs {hnsw['build_seconds']:.1f} s (**{b:.2f}x** of HNSW's, "
                     f"{'meets' if b <= 0.2 else 'misses'} the <= 0.2x target).")
    elif not hnsw:
        lines.append(f"- {dataset}: FAISS HNSW reached recall@10 >= {TARGET} with none of its settings here.")
    scann100 = best_at([r for r in rs if r["algorithm"] == "scann"], k=100)
    bf100 = [r for r in bf if at_k(r, 100)]
    if scann100 and bf100:
        (rec, _, s_mean), (_, _, b_mean) = at_k(scann100, 100), at_k(bf100[0], 100)
        ratio = b_mean / s_mean
        lines.append(f"- {dataset}, one thread, k=100: ScaNN at recall@100 {rec:.3f} answers {1e3 / s_mean:,.0f} "
                     f"queries/s, exact brute force {1e3 / b_mean:,.1f}: **{ratio:,.0f}x** "
                     f"({'meets' if ratio >= 50 else 'misses'} the 50x target).")
    for r in [r for r in results if r["algorithm"] == "bruteforce" and "bandwidth" in r]:
        if r["dataset"] == dataset:
            f = r["bandwidth"]["p50_over_floor"]
            lines.append(f"- {dataset}: unbatched brute force p50 {r['latency']['p50_ms']:.2f} ms against a "
                         f"memory-bandwidth floor of {r['bandwidth']['floor_ms']:.2f} ms: **{f:.2f}x** "
                         f"({'meets' if f <= 1.5 else 'misses'} the <= 1.5x target).")
    return lines


OPTION_KEYS = ("soar_lambda", "reorder_dtype")


def options_section(results: list[dict]) -> list[str]:
    """ScaNN's newer build options (SOAR spilling, int8 / bf16 reordering) against the plain build of the same
    tree, over the search settings both ran: build time, memory, disk and the fastest search reaching the
    target at k = 10 and 100."""
    scann = [r for r in results if r["algorithm"] == "scann"]
    with_options = [r for r in scann if any(key in r["build_args"] for key in OPTION_KEYS)]
    if not with_options:
        return []
    md = ["## ScaNN's newer options", "",
          "SOAR spills each candidate into a second leaf (dot product); int8 and bf16 keep the copy rescored exactly "
          "in 1 or 2 bytes a value instead of 4. Each build against the plain build of the same tree, over the "
          "search settings both ran (benchmarks/ann-scann-options.yaml). A ScaNN SavedModel cannot carry SOAR or "
          "bf16 (ScaNN's TensorFlow state has no place for their files), so neither can be a default while the "
          "export serves ScaNN.", "",
          f"| dataset | build | build s | memory MiB | disk MiB | p50 ms at recall@10 >= {TARGET} | "
          f"p50 ms at recall@100 >= {TARGET} |", "|---|---|---|---|---|---|---|"]
    for name in sorted({r["dataset"] for r in with_options}, key=lambda d: (len(d), d)):
        mine = [r for r in scann if r["dataset"] == name]
        grid = {json.dumps(r["query_args"], sort_keys=True) for r in mine if r in with_options}
        base_build = {k: v for k, v in with_options[0]["build_args"].items() if k not in OPTION_KEYS}
        builds = [base_build] + sorted({json.dumps(r["build_args"], sort_keys=True) for r in mine
                                        if r in with_options and r["dataset"] == name}, key=str)
        for b in builds:
            b = b if isinstance(b, dict) else json.loads(b)
            rs = [r for r in mine if r["build_args"] == b and json.dumps(r["query_args"], sort_keys=True) in grid]
            if not rs:
                continue
            cells = []
            for k in (10, 100):
                best = best_at(rs, k=k)
                cells.append("— (none reaches it)" if best is None else
                             f"{fmt(at_k(best, k)[1])} ({fmt(at_k(best, k)[0])})")
            label = ", ".join(f"{k}={b[k]}" for k in OPTION_KEYS if k in b) or "plain (float32, no spilling)"
            md.append(f"| {name} | {label} | {fmt(rs[0]['build_seconds'])} | {fmt(rs[0]['memory_bytes'] / 2**20)} | "
                      f"{fmt(rs[0]['disk_bytes'] / 2**20)} | {' | '.join(cells)} |")
    return md + [""]


def default_targets(tuned: dict) -> list[str]:
    """The indexer's defaults per k against the target on every large synthetic dataset."""
    lines = []
    for k in ("10", "100"):
        d = tuned["by_k"].get(k, {}).get("defaults")
        if d is None:
            lines.append(f"- k = {k}: no default setting meets recall@{k} >= {TARGET} on every synthetic dataset of "
                         "100K or more (**misses**).")
            continue
        low = d[f"min_recall@{k}"]
        lines.append(f"- The indexer's defaults, searching for k = {k}: recall@{k} >= {low:.3f} on every synthetic "
                     f"dataset of 100K or more ({', '.join(d['datasets'])}): "
                     f"**{'meets' if low >= TARGET else 'misses'}** the {TARGET} target.")
    return lines


def write_report(results_dir: str | Path, out: str | Path, gpu_results=None,
                 title: str = "CPU", force: bool = False, prices: Prices = Prices()) -> dict:
    """Writes report.md, PNG plots and summary.json into ``out`` (replaced whole, if it is a report or empty,
    or with ``force``); returns the summary."""
    results = load_results(results_dir)
    if not results:
        raise ConfigError(f"{results_dir}: no result files; run `scaleout bench` first")
    if isinstance(gpu_results, (str, Path)):
        gpu_results = [gpu_results]
    gpus = [(Path(g).name, json.loads(Path(g).read_text())) for g in gpu_results or ()]
    machine = results[-1]["machine"]
    tuned = tune(results)
    datasets = sorted({r["dataset"] for r in results}, key=lambda d: (not d.startswith("movielens"),
                                                                      min(r["n"] for r in results if r["dataset"] == d),
                                                                      d))
    md = [f"# ANN benchmark: {title}", "",
          f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python "
          f"{machine['python']}; " + ", ".join(f"{k} {v}" for k, v in sorted(machine["versions"].items())) + ".",
          "", "Searches run on **one thread**; builds use every core (TensorFlow-based indexes: one). Latency is one "
          "query per call, k=10; throughput at batch 1 is 1 / mean latency. Recall@k counts returned candidates "
          "scoring at least the exact k-th score (ann-benchmarks' rule), each k from its own search. Memory is the "
          "process's resident-set growth over the build with the input dropped; disk is what `save` writes.", "",
          "## Targets", "", *targets(results), *default_targets(tuned), "", "## ScaNN tuner, per k served", "",
          f"Per k, the settings reaching recall@k >= {TARGET} at the lowest p50 latency of searches for k (grid in "
          "the YAML file). The first k chooses the build; the others choose among that build's search settings. "
          "Records made before searches were timed per k count for k=10 only.", ""]
    for k, t in tuned["by_k"].items():
        md += [f"### k = {k}", "", f"| dataset | settings | recall@{k} | p50 ms |", "|---|---|---|---|"]
        for name, b in t["per_dataset"].items():
            md.append(f"| {name} | " + ("none of the grid reaches the target | — | — |" if b is None else
                                        f"{', '.join(f'{a}={v}' for a, v in sorted(b['settings'].items()))} | "
                                        f"{fmt(b[f'recall@{k}'])} | {fmt(b['p50_ms'])} |"))
        d = t["defaults"]
        md += ["", (f"The indexer's defaults for k = {k} (`IndexConfig.search_by_k` row {search_row(d, int(k))}): "
                    + ", ".join(f"{a}={v}" for a, v in sorted(d["settings"].items()))
                    + f", the one setting meeting the target on every synthetic dataset of 100K or more at the lowest "
                      f"geometric-mean p50 ({fmt(d['geomean_p50_ms'])} ms; lowest recall@{k} "
                      f"{d[f'min_recall@{k}']:.3f}):") if d else
               f"No single ScaNN setting of the grid met the target at k = {k} on every large synthetic dataset.", ""]
        if d:
            md += ["| dataset | " + " | ".join(d["per_dataset"]) + " |", "|---" * (len(d["per_dataset"]) + 1) + "|",
                   f"| recall@{k} | " + " | ".join(fmt(v["recall"]) for v in d["per_dataset"].values()) + " |",
                   "| p50 ms | " + " | ".join(fmt(v["p50_ms"]) for v in d["per_dataset"].values()) + " |", ""]
    with atomic_dir(out, SUMMARY_JSON, force) as tmp:
        for name in datasets:
            rs = [r for r in results if r["dataset"] == name]
            _plot_frontiers(rs, name, tmp / f"frontier-{name}.png")
            md += [f"## {name}: {rs[0]['n']:,} x {rs[0]['dim']}", "", f"![recall vs throughput](frontier-{name}.png)", "",
                   "| index | settings | recall@10 | recall@100 | p50 / p95 / p99 ms | q/s at 1 / 64 / 1024 | build s "
                   "| memory MiB | disk MiB |", "|---|---|---|---|---|---|---|---|---|"]
            for algo in [a for a in LABELS if any(r["algorithm"] == a for r in rs)]:
                mine = [r for r in rs if r["algorithm"] == algo]
                r = best_at(mine) or max(mine, key=lambda r: r["recall@10"])
                lat, qps = r["latency"], r["qps"]
                md.append(f"| {LABELS[algo]} | {settings(r)} | {fmt(r['recall@10'])} | {fmt(r.get('recall@100'))} | "
                          f"{fmt(lat['p50_ms'])} / {fmt(lat['p95_ms'])} / {fmt(lat['p99_ms'])} | "
                          f"{' / '.join(fmt(qps.get(b)) for b in ('1', '64', '1024'))} | {fmt(r['build_seconds'])} | "
                          f"{fmt(r['memory_bytes'] / 2**20)} | {fmt(r['disk_bytes'] / 2**20)} |")
            absent = [LABELS[a] for a in LABELS if any(r["algorithm"] == a for r in results)
                      and not any(r["algorithm"] == a for r in rs)]
            if absent:
                md.append(f"\nNot run on this dataset (limits of the grid file): {', '.join(absent)}.")
            md.append("")
        md += options_section(results)
        md += ["## Brute force against the memory-bandwidth floor", "",
               "Floor: N x d x 4 bytes read per unbatched query / single-thread read bandwidth measured in the same "
               "process (best of a NumPy sum and a BLAS matrix-vector product). It bounds catalogues far larger "
               "than the CPU caches; for a few MB (MovieLens: 215 KB) the per-call overhead of each library is what "
               "is measured.", "",
               "| dataset | index | bandwidth GB/s | floor ms | p50 ms | p50 / floor |", "|---|---|---|---|---|---|"]
        for r in sorted((r for r in results if "bandwidth" in r), key=lambda r: (r["n"], r["dim"], r["algorithm"])):
            b = r["bandwidth"]
            md.append(f"| {r['dataset']} | {LABELS[r['algorithm']]} | {b['bytes_per_s'] / 1e9:.1f} | "
                      f"{fmt(b['floor_ms'])} | {fmt(r['latency']['p50_ms'])} | {b['p50_over_floor']:.2f} |")
        if any(r["dataset"].startswith("synthetic") for r in results):
            _plot_scaling(results, tmp / "latency-vs-size.png")
            md += ["", "## Latency against catalogue size", "", "![p50 vs catalogue size](latency-vs-size.png)", ""]
        from scaleout.bench.gpu_report import gpu_section

        for i, (name, gpu) in enumerate(gpus):
            md += gpu_section(gpu, results, tmp, prices, name, f"cpu-vs-gpu{'-' + str(i + 1) if i else ''}.png")
        if not gpus:
            md += ["", "## GPU", "", "No GPU results in this report (`--gpu-results`); see benchmarks/gpu_bruteforce.py.", ""]
        (tmp / "report.md").write_text("\n".join(md) + "\n")
        summary = {"machine": machine, "tuner": tuned, "targets": targets(results), "gpu": [{"file": name, "device": gpu["device"]} for name, gpu in gpus],
                   "best": {name: {a: _brief(best_at([r for r in results if r["dataset"] == name and
                                                      r["algorithm"] == a]))
                                   for a in LABELS} for name in datasets}}
        write_json(tmp / SUMMARY_JSON, summary)
    return summary


def _brief(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {"settings": {**r["build_args"], **r["applied_query_args"]}, "recall@10": r["recall@10"],
            "p50_ms": r["latency"]["p50_ms"], "qps": r["qps"], "build_seconds": r["build_seconds"]}
