import numpy as np
import pytest
import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.data.tfdata import iter_batches, parquet_dataset


def shards(tmp_path, n=1000, files=3, row_group=64):
    paths = []
    for f in range(files):
        rows = range(f * n, (f + 1) * n)
        path = tmp_path / f"part-{f}.parquet"
        pq.write_table(pa.table({"user_id": [f"u{i}" for i in rows], "x": list(rows)}), path, row_group_size=row_group)
        paths.append(path)
    return paths


def test_unshuffled_batches_follow_file_order(tmp_path):
    batches = list(iter_batches(shards(tmp_path), ["x"], 128, 0, None))
    assert [len(b["x"]) for b in batches] == [128] * 23 + [56]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), np.arange(3000))


def test_every_row_once_per_epoch_and_a_new_order_each_epoch(tmp_path):
    ds = parquet_dataset(shards(tmp_path), ["user_id", "x"], 100, shuffle_buffer=500, seed=3)
    epochs = [np.concatenate([b["x"].numpy() for b in ds]) for _ in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(3000))
        assert not np.array_equal(order, np.arange(3000))
    assert not np.array_equal(epochs[0], epochs[1])
    first = next(iter(ds))
    assert first["user_id"].dtype.name == "string" and first["user_id"].shape == (100,)


def test_lookahead_gives_each_batch_the_next_one_s_column_across_passes(tmp_path):
    files = shards(tmp_path, n=250, files=2)
    plain = parquet_dataset(files, ["user_id", "x"], 100, shuffle_buffer=200, seed=5, drop_remainder=True,
                            repeat=True)
    ahead = parquet_dataset(files, ["user_id", "x"], 100, shuffle_buffer=200, seed=5, drop_remainder=True,
                            repeat=True, lookahead=["x"])
    want = [b["x"].numpy() for b in plain.take(13)]  # 5 batches a pass: past the second pass's end
    got = list(ahead.take(12))
    assert set(got[0]) == {"user_id", "x", "next_x"}
    for i, b in enumerate(got):
        np.testing.assert_array_equal(b["x"].numpy(), want[i])  # the same batches as without lookahead
        np.testing.assert_array_equal(b["next_x"].numpy(), want[i + 1])
    with pytest.raises(ValueError, match="lookahead columns need repeat and drop_remainder"):
        parquet_dataset(files, ["x"], 100, seed=5, drop_remainder=True, lookahead=["x"])


def test_the_pipeline_turns_tf_data_autotuning_off(tmp_path):
    """Nothing in it is autotuned (a fixed prefetch), and with autotuning on, tf.data's autotuning thread makes
    deleting an iterator wait out its sleep, up to 60 s (the end of every model.fit; measured by
    benchmarks/fit_tail.py; scaleout.data.tfdata.fixed_pipeline_options). The options are what this checks."""
    for kwargs in ({}, {"seed": 1, "shuffle_buffer": 200, "repeat": True, "drop_remainder": True}):
        ds = parquet_dataset(shards(tmp_path), ["user_id", "x"], 100, **kwargs)
        assert ds.options().autotune.enabled is False
        assert next(iter(ds))["x"].shape == (100,)


@pytest.mark.parametrize("ids, kind", [
    (["u1", "é-ß", "", "x" * 64, "user 42"], "S"),  # UTF-8, empty, the longest held as fixed-width bytes
    (["u1", "x" * 65, "u3", "u4", "u5"], "O"),  # too long: read as str objects
    (["u1", "tail\x00", "u3", "u4", "u5"], "O"),  # a trailing NUL, which NumPy's S<n> would drop: str objects
])
def test_strings_reach_tensorflow_unchanged_whichever_way_they_are_read(tmp_path, ids, kind):
    """The training pipeline reads strings as fixed-width bytes where they hold them exactly, else as str
    objects; the batches it yields are the same strings either way, a row group of each kind in one batch."""
    from scaleout.data.tfdata import _column_numpy

    assert _column_numpy(pa.array(ids), fixed_width=True).dtype.kind == kind
    assert _column_numpy(pa.array(ids)).tolist() == ids  # what evaluation reads: str objects
    sliced = _column_numpy(pa.array(ids).slice(2), fixed_width=True)  # an array at an offset in its buffers
    assert [s.decode() if isinstance(s, bytes) else s for s in sliced.tolist()] == ids[2:]
    rows = ids + ["plain"] * 5  # the second row group always fits fixed-width bytes
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"user_id": rows, "x": list(range(10))}), path, row_group_size=5)
    batch = next(iter(parquet_dataset([path], ["user_id", "x"], 10)))
    assert [s.decode() for s in batch["user_id"].numpy()] == rows
    assert batch["x"].numpy().tolist() == list(range(10))


def test_the_pipeline_hands_tensorflow_runs_of_batches_and_iter_batches_the_same_rows(tmp_path):
    from scaleout.data.tfdata import iter_chunks

    files = shards(tmp_path)
    chunks = list(iter_chunks(files, ["x"], 128, 1000, np.random.default_rng(4)))
    assert len(chunks) > 2 and all(c["x"].shape[0] > 1 and c["x"].shape[1] == 128 for c in chunks[:-1])
    assert chunks[-1]["x"].shape == (1, 56)  # the short last batch, a run of its own
    batches = list(iter_batches(files, ["x"], 128, 1000, np.random.default_rng(4)))
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]),
                                  np.concatenate([c["x"].ravel() for c in chunks]))
    data = parquet_dataset(files, ["x"], 128, shuffle_buffer=1000, seed=4)
    assert [len(b["x"]) for b in data] == [128] * 23 + [56]
    dropped = parquet_dataset(files, ["x"], 128, shuffle_buffer=1000, seed=4, drop_remainder=True)
    assert dropped.element_spec["x"].shape == (128,) and len(list(dropped)) == 23


def test_a_stream_resumed_batches_into_a_pass_is_the_uninterrupted_stream_from_there(tmp_path):
    """A run resumed within an epoch (scaleout.train.checkpoints.stream_position) starts its input that many
    batches into a pass: every batch from there, the next pass's and each batch's lookahead included, is the
    uninterrupted stream's."""
    files = shards(tmp_path, n=250, files=2)  # 500 rows: 5 batches of 100 a pass (drop_remainder)

    def stream(**kwargs):
        return [{k: v.numpy() for k, v in b.items()} for b in
                parquet_dataset(files, ["user_id", "x"], 100, shuffle_buffer=200, seed=5, drop_remainder=True,
                                repeat=True, lookahead=["x"], **kwargs).take(12)]

    whole = stream()
    for first_pass, skip in ((0, 3), (1, 4), (2, 1)):
        resumed = stream(first_pass=first_pass, skip_batches=skip)
        offset = first_pass * 5 + skip
        for i, batch in enumerate(resumed[:12 - offset]):
            for column in ("x", "next_x", "user_id"):
                np.testing.assert_array_equal(batch[column], whole[offset + i][column])
    with pytest.raises(ValueError, match="skip_batches must be 0 or more"):
        parquet_dataset(files, ["x"], 100, skip_batches=-1)
    with pytest.raises(Exception, match="the pass ended 2 batches before the position to skip to"):
        list(parquet_dataset(files, ["x"], 100, seed=5, drop_remainder=True, skip_batches=7))
