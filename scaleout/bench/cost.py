"""Which device serves a query rate most cheaply at recall >= 0.95: the cost model behind the GPU report's table.

The model, written down:

* An **option** is one way to answer queries over an N x d catalogue at k: ScaNN on CPU cores, exact
  brute force on CPU cores, or exact brute force on a GPU (fp32 or bf16). It counts only where its
  measured recall@k reaches the target (0.95).
* Its **capacity** is the queries/s one unit sustains, measured on the GPU machine: a CPU core is the
  machine's all-core throughput (ScaNN ``search_batched_parallel`` at batch 16384, NumPy brute force at
  batch 1024) divided by its cores; a GPU is its best throughput over the batch sizes measured (copies and
  top k in the time).
* Serving R queries/s takes ``units = max(1, ceil(R / capacity))`` units and costs
  ``units x price of a unit-hour`` an hour. The prices are parameters (``Prices``); their defaults are
  round on-demand cloud list prices, not quotes.
* Batching trades latency for throughput: the one-query p50 of each option stands beside its cost, so
  a latency budget can rule an option out.
"""

from __future__ import annotations

import dataclasses
import math

TARGET = 0.95


@dataclasses.dataclass(frozen=True)
class Prices:
    """Dollars per unit-hour: one CPU core (a vCPU pair of a general-purpose instance) and one GPU."""

    cpu_core_hour: float = 0.05
    gpu_hour: float = 4.00


@dataclasses.dataclass(frozen=True)
class Option:
    dataset: str
    k: int
    name: str
    unit: str  # "CPU core" or "GPU"
    capacity_qps: float  # queries/s of one unit
    p50_ms: float  # one query at a time
    recall: float

    def hourly(self, rate: float, prices: Prices) -> tuple[int, float]:
        """(units, dollars per hour) to serve ``rate`` queries/s."""
        units = max(1, math.ceil(rate / self.capacity_qps))
        return units, units * (prices.gpu_hour if self.unit == "GPU" else prices.cpu_core_hour)


def _by_k(r: dict, k: int) -> dict | None:
    return r.get("by_k", {}).get(str(k))


def options(gpu: dict, k: int) -> dict[str, list[Option]]:
    """Per dataset, the options the GPU machine's results measured at k (any recall)."""
    out: dict[str, list[Option]] = {}
    for r in gpu.get("results", []):
        best = _gpu_capacity(r, k)
        at = _by_k(r, k)
        if best is None or at is None:
            continue
        p50 = min(at["latency"]["p50_ms"], (_by_k(r.get("graph", {}), k) or at)["latency"]["p50_ms"])
        out.setdefault(r["dataset"], []).append(Option(
            r["dataset"], k, f"brute force, GPU {r['dtype']}", "GPU", best, p50, at["recall"]))
    for r in gpu.get("cpu_results", []):
        at = _by_k(r, k)
        if at is None or "error" in r:
            continue
        if r["algorithm"] == "scann":
            total = r["parallel"].get("qps_by_k", {}).get(str(k))
            threads = r["parallel"]["threads"]
        else:
            total, threads = at.get("qps", {}).get("1024"), r["threads"]
        if not total:
            continue
        name = "ScaNN, CPU" if r["algorithm"] == "scann" else "brute force, CPU"
        out.setdefault(r["dataset"], []).append(Option(
            r["dataset"], k, name, "CPU core", total / threads, at["latency"]["p50_ms"], at["recall"]))
    return out


def _gpu_capacity(r: dict, k: int) -> float | None:
    """Best queries/s of one GPU over the batch sizes (and the CUDA-graph path) measured at k."""
    if k == r.get("k", 10):
        rates = [q for b, q in r["qps"].items() if b != "1"] + \
                [q for b, q in r.get("graph", {}).get("qps", {}).items() if b != "1"]
    else:
        rates = list(r.get("qps_by_k", {}).get(str(k), {}).values()) + \
                list(r.get("graph", {}).get("qps_by_k", {}).get(str(k), {}).values())
    return max(rates) if rates else None


def cheapest(opts: list[Option], rate: float, prices: Prices, target: float = TARGET) -> Option | None:
    """The option meeting the recall target that serves ``rate`` at the lowest hourly cost (ties: lower p50)."""
    ok = [o for o in opts if o.recall >= target]
    return min(ok, key=lambda o: (o.hourly(rate, prices)[1], o.p50_ms)) if ok else None


def table(gpu: dict, prices: Prices = Prices(), ks: tuple[int, ...] = (10, 100),
          rates: tuple[float, ...] = (100, 1_000, 10_000, 100_000), target: float = TARGET) -> list[str]:
    """Markdown: per dataset and k, each option's capacity, p50 and hourly cost at each query rate, the
    cheapest marked."""
    md = [f"Prices: ${prices.cpu_core_hour:.2f} per CPU core-hour, ${prices.gpu_hour:.2f} per GPU-hour "
          "(parameters of `scaleout bench-report`: --cpu-core-hour, --gpu-hour). Options below recall "
          f"{target} are listed but never chosen.", "",
          "| dataset | k | option | recall | capacity q/s per unit | p50 ms | " +
          " | ".join(f"{_rate(x)} q/s: units, $/h" for x in rates) + " |",
          "|---|---|---|---|---|---|" + "---|" * len(rates)]
    for k in ks:
        for dataset, opts in sorted(options(gpu, k).items()):
            best = {x: cheapest(opts, x, prices, target) for x in rates}
            for o in sorted(opts, key=lambda o: o.name):
                cells = []
                for x in rates:
                    units, dollars = o.hourly(x, prices)
                    cell = f"{units:,} {o.unit}{'s' if units > 1 else ''}, ${dollars:,.2f}"
                    cells.append(f"**{cell}**" if best[x] == o else cell)
                mark = "" if o.recall >= target else " (below target)"
                md.append(f"| {dataset} | {k} | {o.name}{mark} | {o.recall:.3f} | {o.capacity_qps:,.0f} | "
                          f"{o.p50_ms:.3g} | " + " | ".join(cells) + " |")
    return md


def _rate(x: float) -> str:
    return f"{x / 1000:g}K" if x >= 1000 else f"{x:g}"
