"""benchmarks/generic_pairs.py at small sizes: both modes read the same file, and `first` keeps its distinct
pairs."""

import json

from benchscripts import load

from scaleout.config import DataConfig
from scaleout.data.synthetic import Synthetic


def test_the_benchmark_reads_each_size_both_ways_and_first_keeps_the_distinct_pairs(tmp_path):
    out = tmp_path / "generic_pairs.json"
    bench = load("generic_pairs")
    result = bench.main(["--sizes", "30K,60K", "--chunk-rows", "7000", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert set(result["sizes"]) == {"30000", "60000"}
    for size, entry in result["sizes"].items():
        assert entry["all"]["rows"] == int(size)
        shape = entry["shape"]
        # the distinct pairs of the same draws, counted apart from the source
        draws = Synthetic(DataConfig(source="synthetic", synthetic_interactions=int(size),
                                     synthetic_users=shape["users"], synthetic_items=shape["items"],
                                     repeated_pairs="all"))
        pairs = {(u, i) for b in draws.interactions(7000)
                 for u, i in zip(b.column("user_id").to_pylist(), b.column("movie_id").to_pylist())}
        assert entry["first"]["rows"] == len(pairs) < int(size)
        assert entry["repeated_share"] == round(1 - len(pairs) / int(size), 4)
        # each mode measured in its own child process: its own seconds and peak, and the ratio of the two times
        for mode in ("all", "first"):
            assert entry[mode]["seconds"] > 0 and 0.05 < entry[mode]["peak_gib"] < 64, (size, mode, entry[mode])
        assert entry["ratio"] == round(entry["first"]["seconds"] / entry["all"]["seconds"], 2)
