"""The ScaNN index against exact NumPy answers, in each of its modes, and its save/load round trip."""

import json

import numpy as np
import pytest

from scaleout.config import IndexConfig
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError
from scaleout.index.brute_force import BruteForce
from scaleout.index.scann import Scann


def clustered(n, dim=16, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    points = centers[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, dim))
    return np.array([f"c{i}" for i in range(n)]), points.astype(np.float32)


def recall(found, exact):
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


def exact_top(ids, emb, queries, k):
    return BruteForce().build(ids, emb).search(queries, k)[1]


def test_a_small_catalogue_is_scored_exactly(caplog):
    ids, emb = clustered(500)
    queries = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
    with caplog.at_level("INFO"):
        index = Scann().build(ids, emb)
    assert index.mode == "brute_force" and "scores them all exactly" in caplog.text
    scores, found = index.search(queries, k=5)
    np.testing.assert_array_equal(found, exact_top(ids, emb, queries, 5))
    np.testing.assert_allclose(scores, np.sort(queries @ emb.T, axis=1)[:, ::-1][:, :5], rtol=1e-5)
    with pytest.raises(ConfigError, match="leaves_to_search applies to a tree"):
        index.search(queries, k=5, leaves_to_search=3)


def test_hashing_and_tree_modes_reach_high_recall_and_more_leaves_help():
    ids, emb = clustered(6000)
    queries = clustered(200, seed=2)[1]
    exact = exact_top(ids, emb, queries, 10)
    hashed = Scann(IndexConfig(brute_force_below=100, tree_below=100_000)).build(ids, emb)
    assert hashed.mode == "ah"
    default, deeper = (recall(hashed.search(queries, 10, reorder=r)[1], exact) for r in (None, 300))
    assert deeper >= 0.95 and deeper >= default
    tree = Scann(IndexConfig(brute_force_below=100, tree_below=1000)).build(ids, emb)
    assert tree.mode == "tree" and tree.num_leaves == round(IndexConfig().leaves_per_sqrt * 6000 ** 0.5)
    few = recall(tree.search(queries, 10, leaves_to_search=1, reorder=10)[1], exact)
    every = recall(tree.search(queries, 10, leaves_to_search=tree.num_leaves, reorder=500)[1], exact)
    assert every >= 0.99 and every > few


def test_scann_s_own_log_lines_go_to_the_debug_log_not_the_terminal(capfd, caplog):
    import os

    from scaleout.index.scann import absl_log_to_debug

    ids, emb = clustered(3000)
    capfd.readouterr()
    with caplog.at_level("DEBUG", logger="scaleout.index.scann"):
        tree = Scann(IndexConfig(brute_force_below=100, tree_below=1000)).build(ids, emb)
        with absl_log_to_debug():  # what is not ScaNN's log is written back; its errors become warnings
            os.write(2, b"E1130 10:57:15.123456    4373 scann.cc:12] an error of ScaNN's\nnot absl\n")
    assert tree.mode == "tree"
    err = capfd.readouterr().err
    assert "partitioner_factory_base" not in err and "not absl" in err
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any("Size of sampled dataset for training partition" in m for m in debug)  # the tree's training log
    assert any(r.levelname == "WARNING" and "an error of ScaNN's" in r.getMessage() for r in caplog.records)


def test_default_search_settings_grow_with_k_as_the_rows_of_search_by_k_say():
    ids, emb = clustered(20_000, clusters=200)
    rows = ((10, 0.05, 100, 6), (100, 0.05, 50, 3))
    tree = Scann(IndexConfig(mode="tree", num_leaves=100, search_by_k=rows)).build(ids, emb)
    # k=10: max(5% of 100 leaves, 100 x 10 candidates / 200 a leaf) = 5; k=100: 50 x 100 / 200 = 25
    assert tree.search_settings(10) == {"final_num_neighbors": 10, "leaves_to_search": 5, "pre_reorder_num_neighbors": 60}
    assert tree.search_settings(100) == {"final_num_neighbors": 100, "leaves_to_search": 25,
                                         "pre_reorder_num_neighbors": 300}
    assert tree.search_settings(5)["leaves_to_search"] == 5 and tree.search_settings(5)["pre_reorder_num_neighbors"] == 30
    assert tree.search_settings(1000)["leaves_to_search"] == 100  # beyond the last row, its values: all 100 leaves
    queries = emb[:50] + 0.1
    exact = exact_top(ids, emb, queries, 100)
    assert recall(tree.search(queries, 100)[1], exact) > recall(tree.search(queries, 100, leaves_to_search=5)[1], exact)
    # a field set on the config replaces the rows' value for every k
    fixed = Scann(IndexConfig(mode="tree", num_leaves=100, search_by_k=rows, leaves_fraction=0.1)).build(ids, emb)
    assert fixed.default_leaves_to_search(10) == fixed.default_leaves_to_search(100) == 10
    assert Scann(IndexConfig(mode="tree", num_leaves=100, search_by_k=rows, reorder_per_k=2)).build(
        ids, emb).search_settings(100)["pre_reorder_num_neighbors"] == 200
    with pytest.raises(ConfigError, match="search_by_k"):
        IndexConfig(search_by_k=((100, 0.1, 0, 3), (10, 0.1, 0, 3)))
    with pytest.raises(ConfigError, match="search_by_k"):
        IndexConfig(search_by_k=((10, 0.0, 0, 3),))


@pytest.mark.parametrize("option,written", [({"soar_lambda": 1.5}, "hashed_dataset_soar.npy"),
                                            ({"reorder_dtype": "bfloat16"}, "bfloat16_dataset.npy"),
                                            ({"reorder_dtype": "int8"}, "int8_dataset.npy")])
def test_soar_and_quantized_reordering_build_search_and_round_trip(tmp_path, option, written):
    from scaleout.config import IndexJobConfig

    ids, emb = clustered(5000)
    queries = emb[:40] + 0.05
    index = Scann(IndexConfig(mode="tree", num_leaves=40, **option)).build(ids, emb)
    assert recall(index.search(queries, 10)[1], exact_top(ids, emb, queries, 10)) > 0.8
    index.save(tmp_path / "index")
    assert (tmp_path / "index" / "scann" / written).is_file()
    again = Scann.load(tmp_path / "index")
    assert (again.search(queries, 10)[1] == index.search(queries, 10)[1]).all()
    job = dict(kinds=("scann",), export=("scann",))
    if written == "int8_dataset.npy":  # ScaNN's TensorFlow state carries int8 reordering
        again.tf_state()
        IndexJobConfig(index=IndexConfig(**option), **job)
    else:  # but neither SOAR nor bf16: refused by name, before any work in the job
        with pytest.raises(ConfigError, match="TensorFlow ops .* cannot load"):
            again.tf_state()
        with pytest.raises(ConfigError, match="a ScaNN SavedModel cannot carry"):
            IndexJobConfig(index=IndexConfig(**option), **job)
        IndexJobConfig(index=IndexConfig(**option), kinds=("scann",), export=("brute_force",))


def test_round_trip_and_damaged_directories(tmp_path):
    ids, emb = clustered(3000)
    queries = clustered(50, seed=3)[1]
    index = Scann(IndexConfig(brute_force_below=100, tree_below=1000)).build(ids, emb)
    index.save(tmp_path / "scann")
    again = Scann.load(tmp_path / "scann")
    assert (again.mode, again.num_leaves) == (index.mode, index.num_leaves)
    for a, b in zip(index.search(queries, 10, leaves_to_search=5), again.search(queries, 10, leaves_to_search=5)):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "scann" / "scann" / "scann_config.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="corrupt or truncated index: scann/scann_config.pb differs from its "
                                            "checksum in index.json"):
        Scann.load(tmp_path / "scann")
    meta = json.loads((tmp_path / "scann" / "index.json").read_text())
    del meta["files"]  # as an index saved before checksums were recorded: ScaNN's own loading finds the damage
    (tmp_path / "scann" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="corrupt or truncated ScaNN index"):
        Scann.load(tmp_path / "scann")
    with pytest.raises(ArtifactError, match="holds a 'scann' index; expected 'brute_force'"):
        BruteForce.load(tmp_path / "scann")


def test_bad_settings_name_the_combination():
    ids, emb = clustered(300)
    with pytest.raises(ConfigError, match="num_leaves=400 but there are 300 candidates"):
        Scann(IndexConfig(brute_force_below=10, tree_below=100, num_leaves=400)).build(ids, emb)
    index = Scann(IndexConfig(brute_force_below=10, tree_below=100, leaves_per_sqrt=1)).build(ids, emb)
    with pytest.raises(ConfigError, match="leaves_to_search=99; expected 1 to 17"):
        index.search(emb[:2], 5, leaves_to_search=99)
    with pytest.raises(ScaleoutError, match="k=301 but the index holds 300 candidates"):
        index.search(emb[:2], 301)
    with pytest.raises(ConfigError, match="anisotropic_threshold"):
        IndexConfig(anisotropic_threshold=1.5)
    with pytest.raises(ConfigError, match="leaves_per_sqrt must be positive, got 0"):
        IndexConfig(leaves_per_sqrt=0)


@pytest.mark.parametrize("kind", ["brute_force", "scann"])
def test_queries_with_nan_or_infinite_values_are_refused_by_both_kinds(kind):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 8)).astype(np.float32)
    index = BruteForce() if kind == "brute_force" else Scann(IndexConfig(mode="ah"))
    index.build(np.arange(500).astype(str), vectors)
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    queries[2, 5] = np.nan
    queries[3, 0] = np.inf
    with pytest.raises(ScaleoutError, match=r"2 of 4 query embeddings hold NaN or infinite values \(the first: query 2\)"):
        index.search(queries, 5)
    assert index.search(queries[:2], 5)[1].shape == (2, 5)
