"""The GPU half's section of the ANN report: the device's ceilings, brute force against its floors, the other
array libraries' paths, the same machine's CPU side, a CPU-vs-GPU plot and the cost table (scaleout.bench.cost).
Reads the JSON that benchmarks/gpu_bruteforce.py writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaleout.bench import cost, gpu
from scaleout.bench.cost import Prices
from scaleout.bench.formatting import LABELS, fmt


def gpu_section(gpu: dict, results: list[dict], tmp: Path, prices: Prices = Prices(), source: str = "",
                plot: str = "cpu-vs-gpu.png") -> list[str]:
    """The GPU half: the device's ceilings, brute force against its floors (eager and CUDA graph), the other
    array libraries' paths, the same machine's CPU side, the CPU-vs-GPU plot and the cost table."""
    c = gpu.get("ceilings", {})
    note = gpu.get("note") or ("This run ended at its time limit before its last step (the note it writes at the "
                               "end is missing); what it measured is below, and what it did not reach is absent.")
    md = ["", f"## GPU: {gpu['device']}" + (f" ({source})" if source else ""), "", note, ""]
    if "grouped_above" in c:
        grouped = c["grouped_above"] < (1 << 40)
        md += [f"Top k of wide rows: {'through group maxima' if grouped else 'torch.topk on every row'} in this run "
               f"(times on the device: " + "; ".join(
                   f"{shape.removeprefix('topk_')}: torch.topk {v['torch.topk_s'] * 1e3:.3g} ms, group maxima "
                   f"{v['group_maxima_s'] * 1e3:.3g} ms" for shape, v in c.items() if shape.startswith("topk_")) + ").",
               ""]
    if "read_bytes_per_s" in c:
        md += [f"Measured on the device: read {c['read_bytes_per_s'] / 1e12:.2f} TB/s (a sum over 4 GiB), copy "
               f"{c['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write), matrix products {c['float32_flops'] / 1e12:.1f} "
               f"TFLOP/s fp32 and {c['bfloat16_flops'] / 1e12:.0f} TFLOP/s bf16 (8192^3). Datasheet bandwidth "
               f"{(c.get('datasheet_bytes_per_s') or 0) / 1e12:.1f} TB/s. The **floor** of a search of b queries over "
               "N x d candidates is max(N x d x bytes per element / datasheet bandwidth, 2 b N d FLOP / measured "
               "matrix rate): what a kernel that reads the candidates once and never writes the scores out could "
               "reach. The searches here write the b x N scores and read them back for the top k, so batched bf16 "
               "(fast arithmetic) sits far above its floor.", ""]
    md += ["| dataset | dtype | recall@10 / @100 | one query p50 ms: eager / CUDA graph / floor | "
           "q/s at 64 / 1024 / 16384 (best of eager, graph) | x floor at 1 / 64 / 1024 / 16384 |",
           "|---|---|---|---|---|---|"]
    for r in gpu["results"]:
        g, fl = r.get("graph", {}), r.get("floors", {})
        qps = {b: max(q, g.get("qps", {}).get(b, 0)) for b, q in r["qps"].items()}
        p50 = min(r["latency"]["p50_ms"], g.get("latency", {}).get("p50_ms", float("inf")))
        ratios = [p50 / 1e3 / fl["1"]["floor_s"] if "1" in fl else None] + \
                 [fl[b]["floor_qps"] / qps[b] if b in fl and b in qps else None for b in ("64", "1024", "16384")]
        md.append(f"| {r['dataset']} | {r['dtype']} | {fmt(r['recall@10'])} / {fmt(r.get('recall@100'))} | "
                  f"{fmt(r['latency']['p50_ms'])} / {fmt(g.get('latency', {}).get('p50_ms'))} / "
                  f"{fmt(fl['1']['floor_s'] * 1e3) if '1' in fl else '—'} | "
                  f"{' / '.join(fmt(qps.get(b)) for b in ('64', '1024', '16384'))} | "
                  f"{' / '.join('—' if x is None else f'{x:.2f}' for x in ratios)} |")
    md += _plans(gpu["results"])
    if gpu.get("paths"):
        md += ["", "The other array libraries' paths on the same GPU (fp32, against PyTorch's exact top 100):", "",
               "| library | recall@100 | same rows | one query p50 ms |", "|---|---|---|---|"]
        for r in gpu["paths"]:
            md.append(f"| {r['backend']} | " + (f"failed: {r['error']} | | |" if "error" in r else
                      f"{fmt(r['recall@100'])} | {fmt(r['same_rows@100'])} | {fmt(r['latency']['p50_ms'])} |"))
    cpu = [r for r in gpu.get("cpu_results", []) if "error" not in r]
    if cpu:
        md += ["", f"The same machine's CPUs ({gpu['machine']['cpu']}, {gpu['machine']['cores']} cores):", "",
               "| dataset | index | recall@10 / @100 | one query p50 ms (1 thread) | all cores q/s, k=10 / 100 |",
               "|---|---|---|---|---|"]
        for r in cpu:
            if r["algorithm"] == "scann":
                allc = r["parallel"].get("qps_by_k", {"10": r["parallel"]["qps"]})
                st = r.get("search_settings", {}).get("10", {})
                label = (f"ScaNN (the IndexConfig defaults of its day: at k=10 {st.get('leaves_to_search', '?')} leaves, "
                         f"reorder {st.get('pre_reorder_num_neighbors', '?')}; build {fmt(r['build_seconds'])} s)")
            else:
                allc = {k: v["qps"]["1024"] for k, v in r["by_k"].items()}
                label = f"NumPy brute force (batch 1024, {r['threads']} threads: one-query p50 too)"
            md.append(f"| {r['dataset']} | {label} | {fmt(r['recall@10'])} / {fmt(r.get('recall@100'))} | "
                      f"{fmt(r['latency']['p50_ms'])} | {fmt(allc.get('10'))} / {fmt(allc.get('100'))} |")
    _plot_gpu(gpu, [{**r, "where": "GPU machine CPU"} for r in cpu], tmp / plot)
    md += ["", f"![CPU vs GPU]({plot})", ""]
    table = cost.table(gpu, prices)
    if len(table) > 4:  # rows beyond the heading: the run measured the options at a k
        md += ["### Which device is cheapest" + (f" ({source})" if source else ""), "",
               cost.__doc__.split("\n\n", 1)[1].strip(), "", *table, ""]
    return md


def _plans(results: list[dict]) -> list[str]:
    """What each captured search chose, by the median replay of every plan it tried (runs from 2026-11-30 on)."""
    rows = []
    for r in results:
        for key, t in r.get("graph", {}).get("plans", {}).items():
            batch, k = key.split("x")
            # the eager search's plan: the one plan whose top k is "auto" (the JSON's keys are sorted)
            default = next(v for name, v in t["seconds"].items() if "top k auto" in name)
            best = t["seconds"][t["name"]]
            rows.append(f"| {r['dataset']} | {r['dtype']} | {batch} | {k} | {t['name']} | {best * 1e3:.3g} | "
                        f"{default * 1e3:.3g} | {len(t['seconds'])} |")
    failed = [f"{r['dataset']} {r['dtype']}: {r['graph_error'].rstrip('.')}" for r in results if r.get("graph_error")]
    md = ["", f"The CUDA graph path failed on {'; '.join(failed)}."] if failed else []
    if not rows:
        return md
    return md + [
        "", "Each CUDA graph's plan, the fastest of those timed by their replays (median of 7): the score product's "
        "form for one query, the top-k way of wide rows (auto: as the eager search; torch.topk; group maxima; or "
        f"blocks of {gpu.BLOCK:,}), and tiles of {' or '.join(f'{t:,}' for t in gpu.L2_TILES)} scores where that makes "
        f"at most {gpu.MAX_TILES:,} tiles; no choice where one search takes over {gpu.TUNE_SECONDS} s:", "",
        "| dataset | dtype | batch | k | plan chosen | its replay ms | the eager plan's ms | plans timed |",
        "|---|---|---|---|---|---|---|---|", *rows]


def _plot_gpu(gpu, cpu, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rows = []
    for r in gpu["results"]:
        g = r.get("graph", {})
        rows.append((r["dataset"], f"GPU {r['backend']} {r['dtype']} brute force",
                     min(r["latency"]["p50_ms"], g.get("latency", {}).get("p50_ms", float("inf"))),
                     max([q for b, q in list(r["qps"].items()) + list(g.get("qps", {}).items()) if b != "1"])))
    for r in cpu:
        whole = r["parallel"]["qps"] if r["algorithm"] == "scann" else r["qps"].get("1024")
        rows.append((r["dataset"], f"{r['where']} {LABELS.get(r['algorithm'], r['algorithm'])}",
                     r["latency"]["p50_ms"], whole))
    datasets = sorted({d for d, *_ in rows})
    series = sorted({s for _, s, *_ in rows})
    width = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        for ax, col in zip(axes, (2, 3)):
            vals = [next((row[col] for row in rows if row[0] == d and row[1] == s), 0) or 0 for d in datasets]
            ax.bar(np.arange(len(datasets)) + i * width, vals, width, label=s)
    for ax, title in zip(axes, ("p50 ms, one query, k=10 (lower is better)",
                                "queries/s, k=10: the GPU at its best batch; all CPU cores")):
        ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets, rotation=20, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
