import numpy as np
import pytest

from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.index.brute_force import BruteForce


def test_brute_force_matches_scores_by_hand():
    ids = np.array(["a", "b", "c"])
    emb = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    scores, found = BruteForce().build(ids, emb).search(np.array([[2, 1], [-1, 3]], np.float32), k=2)
    # query 1 scores: a=2, b=1, c=3; query 2: a=-1, b=3, c=2
    np.testing.assert_array_equal(found, [["c", "a"], ["b", "c"]])
    np.testing.assert_allclose(scores, [[3, 2], [3, 2]])


def test_brute_force_agrees_with_numpy_on_random_data_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([f"i{j}" for j in range(500)])
    emb = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(2100, 16)).astype(np.float32)  # more than one query block
    index = BruteForce().build(ids, emb)
    scores, found = index.search(queries, k=10)
    expected = np.argsort(-(queries @ emb.T), axis=1)[:, :10]
    np.testing.assert_array_equal(found, ids[expected])
    index.save(tmp_path / "bf")
    again = BruteForce.load(tmp_path / "bf")
    np.testing.assert_array_equal(again.search(queries, k=10)[1], found)


@pytest.mark.parametrize("ids, emb, message", [
    (["a", "a"], [[1.0], [2.0]], "id 'a' has more than one embedding"),
    (["a", "b"], [[1.0], [np.nan]], "NaN or infinite values, the first for id 'b'"),
    (["a"], [[1.0], [2.0]], "1 ids but 2 embeddings"),
    ([], np.zeros((0, 2)), "no candidates"),
])
def test_bad_embeddings_are_refused(ids, emb, message):
    with pytest.raises(ScaleoutError, match=message):
        BruteForce().build(np.array(ids), np.array(emb, np.float32))


def test_bad_searches_and_corrupt_directories(tmp_path):
    index = BruteForce().build(np.array(["a", "b"]), np.eye(2, dtype=np.float32))
    with pytest.raises(ScaleoutError, match="k=3 but the index holds 2 candidates"):
        index.search(np.ones((1, 2)), k=3)
    with pytest.raises(ScaleoutError, match="dimension 3"):
        index.search(np.ones((1, 3)), k=1)
    index.save(tmp_path / "bf")
    data = (tmp_path / "bf" / "embeddings.npy").read_bytes()
    (tmp_path / "bf" / "embeddings.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        BruteForce.load(tmp_path / "bf")
    with pytest.raises(ArtifactError, match="not a saved index"):
        BruteForce.load(tmp_path)


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_brute_force_tiles_merge_to_the_exact_top_k(monkeypatch, batch):
    # Small tiles so one search crosses many of them and merges only the scores above each running k-th best.
    monkeypatch.setattr(BruteForce, "CHUNK", 97)
    monkeypatch.setattr(BruteForce, "FIRST", 40)
    monkeypatch.setattr(BruteForce, "SCORES_PER_TILE", 4096)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(3000, 8)).astype(np.float32)
    queries = rng.normal(size=(batch, 8)).astype(np.float32)
    index = BruteForce().build(np.arange(3000), emb)
    for k in (1, 10, 150):
        scores, found = index.search(queries, k)
        full = queries @ emb.T
        np.testing.assert_array_equal(found.astype(int), np.argsort(-full, axis=1, kind="stable")[:, :k])
        np.testing.assert_allclose(scores, np.take_along_axis(full, found.astype(int), axis=1), rtol=1e-5, atol=1e-5)


def test_brute_force_with_repeated_candidates_returns_the_top_scores(monkeypatch):
    monkeypatch.setattr(BruteForce, "CHUNK", 50)
    monkeypatch.setattr(BruteForce, "FIRST", 20)
    rng = np.random.default_rng(2)
    emb = np.repeat(rng.normal(size=(100, 4)).astype(np.float32), 6, axis=0)  # every score six times
    queries = rng.normal(size=(5, 4)).astype(np.float32)
    scores, found = BruteForce().build(np.arange(600), emb).search(queries, 20)
    np.testing.assert_allclose(scores, -np.sort(-(queries @ emb.T), axis=1)[:, :20], rtol=1e-5, atol=1e-5)
    assert all(len(set(row)) == 20 for row in found)
