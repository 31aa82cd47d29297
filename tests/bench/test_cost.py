"""The cost model behind the GPU report's table: units, prices, the recall target and the cheapest option."""

import pytest

from scaleout.bench import cost
from scaleout.bench.cost import Option, Prices


def gpu_json():
    """What benchmarks/gpu_bruteforce.py writes, cut to the fields the cost model reads."""
    lat = lambda ms: {"p50_ms": ms}  # noqa: E731
    return {
        "results": [
            {"dataset": "d", "dtype": "float32", "k": 10, "qps": {"1": 3000, "64": 100_000, "1024": 160_000},
             "by_k": {"10": {"recall": 1.0, "latency": lat(0.3)}, "100": {"recall": 1.0, "latency": lat(0.31)}},
             "qps_by_k": {"100": {"1024": 150_000}},
             "graph": {"latency": lat(0.2), "qps": {"1": 5000, "1024": 170_000},
                       "by_k": {"10": {"recall": 1.0, "latency": lat(0.2)}}}},
            {"dataset": "d", "dtype": "bfloat16", "k": 10, "qps": {"1": 4000, "1024": 300_000},
             "by_k": {"10": {"recall": 0.94, "latency": lat(0.25)}}},
        ],
        "cpu_results": [
            {"dataset": "d", "algorithm": "scann", "by_k": {"10": {"recall": 0.99, "latency": lat(1.1)},
                                                            "100": {"recall": 0.97, "latency": lat(1.5)}},
             "parallel": {"threads": 16, "qps": 32_000, "qps_by_k": {"10": 32_000, "100": 16_000}}},
            {"dataset": "d", "algorithm": "bruteforce", "threads": 16,
             "by_k": {"10": {"recall": 1.0, "latency": lat(20.0), "qps": {"1024": 800}}}},
            {"dataset": "d", "algorithm": "scann", "error": "RuntimeError: boom"},
        ],
    }


def test_options_read_capacity_per_unit_and_the_fastest_one_query_path():
    opts = {o.name: o for o in cost.options(gpu_json(), 10)["d"]}
    assert set(opts) == {"brute force, GPU float32", "brute force, GPU bfloat16", "ScaNN, CPU", "brute force, CPU"}
    gpu32 = opts["brute force, GPU float32"]
    assert gpu32.capacity_qps == 170_000 and gpu32.p50_ms == 0.2 and gpu32.unit == "GPU"  # the graph's
    assert opts["ScaNN, CPU"].capacity_qps == 2_000 and opts["ScaNN, CPU"].unit == "CPU core"  # 32,000 / 16
    assert opts["brute force, CPU"].capacity_qps == 50
    at100 = {o.name: o for o in cost.options(gpu_json(), 100)["d"]}
    assert set(at100) == {"brute force, GPU float32", "ScaNN, CPU"}  # bf16 and CPU brute force: not measured at 100
    assert at100["brute force, GPU float32"].capacity_qps == 150_000 and at100["ScaNN, CPU"].capacity_qps == 1_000


@pytest.mark.parametrize("rate,units,dollars", [(1, 1, 0.05), (2_000, 1, 0.05), (2_001, 2, 0.10), (64_000, 32, 1.60)])
def test_units_are_whole_and_cost_scales_with_the_unit_price(rate, units, dollars):
    o = Option("d", 10, "ScaNN, CPU", "CPU core", 2_000, 1.0, 0.99)
    assert o.hourly(rate, Prices()) == (units, pytest.approx(dollars))
    assert o.hourly(rate, Prices(cpu_core_hour=1.0))[1] == pytest.approx(units)


def test_cheapest_depends_on_the_rate_and_prices_and_never_picks_below_the_recall_target():
    opts = cost.options(gpu_json(), 10)["d"]
    assert cost.cheapest(opts, 1_000, Prices()).name == "ScaNN, CPU"  # one core
    # 170,000 q/s: 85 cores ($4.25) against one GPU ($4.00)
    assert cost.cheapest(opts, 170_000, Prices()).name == "brute force, GPU float32"
    assert cost.cheapest(opts, 170_000, Prices(gpu_hour=10.0)).name == "ScaNN, CPU"
    # bf16 is the fastest GPU option but misses recall 0.95: never chosen
    assert cost.cheapest(opts, 300_000, Prices(gpu_hour=0.01)).name == "brute force, GPU float32"
    assert cost.cheapest([o for o in opts if o.recall < 0.95], 10, Prices()) is None


def test_table_marks_the_cheapest_cell_per_rate_and_flags_options_below_target():
    md = cost.table(gpu_json(), Prices(), ks=(10,), rates=(1_000, 170_000))
    rows = {line.split("|")[3].strip(): line for line in md if line.startswith("| d |")}
    assert "**1 CPU core, $0.05**" in rows["ScaNN, CPU"] and "**1 GPU, $4.00**" in rows["brute force, GPU float32"]
    assert "brute force, GPU bfloat16 (below target)" in rows
    assert sum(line.count("**") // 2 for line in rows.values()) == 2  # one cheapest per rate
