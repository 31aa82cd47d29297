"""tf.data over Parquet shards, read a row group at a time.

Rows are streamed from the files with pyarrow (no copy of the whole split in
memory); shuffling mixes a bounded buffer of rows drawn from row groups taken
in a random order, reshuffled every epoch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.tfenv import import_tensorflow

_TF_TYPES = {pa.string(): "string", pa.large_string(): "string", pa.int64(): "int64", pa.float32(): "float32",
             pa.bool_(): "bool"}


FIXED_WIDTH_MAX = 64  # longest string (bytes) a column may hold to be read as fixed-width bytes


def _column_numpy(column: pa.ChunkedArray | pa.Array, fixed_width: bool = False) -> np.ndarray:
    """The column as NumPy: strings as Python str objects, or with ``fixed_width`` as fixed-width bytes
    (NumPy's ``S<n>``, UTF-8) where that holds them exactly: no nulls, none longer than FIXED_WIDTH_MAX bytes,
    none ending in a NUL byte (which ``S<n>`` drops)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column.to_numpy(zero_copy_only=False)
    if fixed_width:
        held = _fixed_width_bytes(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        if held is not None:
            return held
    return column.to_numpy(zero_copy_only=False).astype(object)


def _fixed_width_bytes(array: pa.Array) -> np.ndarray | None:
    """A string array as NumPy ``S<n>`` bytes, gathered from Arrow's buffers without a Python object per
    string (a third of the time of str objects, and TensorFlow reads them as fast); None where they would
    not hold it exactly (see _column_numpy)."""
    if array.null_count or not len(array):
        return None
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], offset_type)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], np.uint8) if array.buffers()[2] is not None else np.zeros(1, np.uint8)
    lengths = np.diff(offsets)
    width = int(lengths.max())
    if width > FIXED_WIDTH_MAX or (width and data[offsets[1:][lengths > 0] - 1].min() == 0):
        return None
    width = max(width, 1)
    positions = np.minimum(offsets[:-1, None] + np.arange(width), len(data) - 1)
    fixed = np.where(np.arange(width) < lengths[:, None], data[positions], 0).astype(np.uint8)
    return fixed.view(f"S{width}").ravel()


def iter_chunks(files: Sequence[Path], columns: Sequence[str], batch_size: int, shuffle_buffer: int,
                rng: np.random.Generator | None, drop_remainder: bool = False,
                fixed_width: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The batches of ``iter_batches``, a run of them at a time: {column: array[batches, batch_size]} (views of
    one shuffle buffer's rows), then the short last batch, where there is one and ``drop_remainder`` is off,
    as ``[1, rows]``; with ``fixed_width``, strings as fixed-width bytes where they fit (_column_numpy)."""
    readers = {f: pq.ParquetFile(f) for f in files}
    units = [(f, g) for f, reader in readers.items() for g in range(reader.num_row_groups)]
    if rng is not None:
        rng.shuffle(units)
    pending: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    size = 0

    def flush(final: bool) -> Iterator[dict[str, np.ndarray]]:
        nonlocal pending, size
        if not size:
            return
        merged = {c: np.concatenate(v) for c, v in pending.items()}
        if rng is not None:
            order = rng.permutation(size)
            merged = {c: v[order] for c, v in merged.items()}
        full = size - size % batch_size
        if full:
            yield {c: v[:full].reshape(-1, batch_size) for c, v in merged.items()}
        if final and not drop_remainder and full < size:
            yield {c: v[full:].reshape(1, -1) for c, v in merged.items()}
        pending = {c: [v[full:]] for c, v in merged.items()}
        size -= full

    for path, group in units:
        table = readers[path].read_row_group(group, columns=list(columns))
        for c in columns:
            pending[c].append(_column_numpy(table.column(c), fixed_width))
        size += table.num_rows
        if size >= max(shuffle_buffer if rng is not None else 0, batch_size):
            yield from flush(final=False)
    yield from flush(final=True)


def iter_batches(files: Sequence[Path], columns: Sequence[str], batch_size: int, shuffle_buffer: int,
                 rng: np.random.Generator | None, drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``batch_size`` rows as {column: array}; the last may be shorter unless ``drop_remainder``.

    With ``rng``, row groups are read in a random order and rows are shuffled
    within a buffer of at least ``shuffle_buffer`` rows; without it, rows come
    in file order.
    """
    for chunk in iter_chunks(files, columns, batch_size, shuffle_buffer, rng, drop_remainder):
        for i in range(len(next(iter(chunk.values())))):
            yield {c: v[i] for c, v in chunk.items()}


NEXT = "next_"  # prefix of a lookahead column: the same column of the batch that comes next


def parquet_dataset(files: Sequence[Path], columns: Sequence[str], batch_size: int, shuffle_buffer: int = 0,
                    seed: int | None = None, drop_remainder: bool = False, repeat: bool = False,
                    first_pass: int = 0, skip_batches: int = 0, lookahead: Sequence[str] = ()):
    """A ``tf.data.Dataset`` of {column: Tensor[batch]} read from Parquet ``files``.

    With ``seed`` the order is shuffled, differently each epoch (each pass over
    the files draws from ``default_rng([seed, first_pass + pass])``; a resumed
    run starts at its epoch). With ``repeat`` the passes never end: the caller
    sets the steps per epoch. ``skip_batches``: the first pass starts that many
    batches in (read and shuffled as without it, so the stream is the same from
    there on: a run resumed mid-pass). Each column of ``lookahead`` (with ``repeat``)
    comes twice: as itself, and as ``next_<column>``, that column of the
    batch that follows (across passes too), so a training step can send the
    next batch's ids ahead with its own collective (scaleout.train.model).
    """
    tf = import_tensorflow()
    files = [Path(f) for f in files]
    schema = pq.read_schema(files[0])
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise KeyError(f"{files[0]}: no column(s) {missing}; has {schema.names}")
    if lookahead and not (repeat and drop_remainder):
        raise ValueError("lookahead columns need repeat and drop_remainder (every batch has a next, of one size)")
    # The generator hands tf.data a run of batches at a time ([batches, batch_size]; one call of a Python
    # generator costs what the step of a small batch costs on a core of its own), which unbatch() splits.
    shape = [None, batch_size if drop_remainder else None]
    signature = {c: tf.TensorSpec(shape, getattr(tf, _TF_TYPES[schema.field(c).type]), name=c) for c in columns}
    signature.update({NEXT + c: tf.TensorSpec(shape, signature[c].dtype, name=NEXT + c) for c in lookahead})
    if skip_batches < 0:
        raise ValueError(f"skip_batches must be 0 or more, got {skip_batches}")

    passes = itertools.count(first_pass)  # shared: without repeat each iteration of the dataset is the next pass

    def chunks():
        for number in passes:
            rng = None if seed is None else np.random.default_rng([seed, number])
            stream = iter_chunks(files, columns, batch_size, shuffle_buffer, rng, drop_remainder, fixed_width=True)
            yield from (skipped(stream, skip_batches) if number == first_pass and skip_batches else stream)
            if not repeat:
                return

    def generate():
        stream = chunks()
        if not lookahead:
            yield from stream
            return
        current = next(stream)
        for following in stream:  # each batch's next: the rest of its run, then the following run's first
            yield {**current, **{NEXT + c: np.concatenate([current[c][1:], following[c][:1]]) for c in lookahead}}
            current = following

    data = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    if repeat:
        # Declared endless: a multi-worker strategy otherwise all-reduces, every step, whether
        # any worker's input has run out.
        data = data.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return data.prefetch(2).with_options(fixed_pipeline_options())


def skipped(chunks: Iterator[dict[str, np.ndarray]], batches: int) -> Iterator[dict[str, np.ndarray]]:
    """The runs of batches of ``chunks`` less the first ``batches`` batches. ValueError where the pass holds
    fewer: a resumed stream that started elsewhere would be silently another."""
    for chunk in chunks:
        held = len(next(iter(chunk.values())))
        if batches >= held:
            batches -= held
            continue
        yield {c: v[batches:] for c, v in chunk.items()} if batches else chunk
        batches = 0
    if batches:
        raise ValueError(f"the pass ended {batches} batches before the position to skip to")


def fixed_pipeline_options():
    """tf.data options for a pipeline that has nothing to autotune (its prefetch is fixed): autotuning off.

    With it on, every iterator starts tf.data's autotuning thread, whose optimisation loop sleeps for a period
    that doubles up to 60 s; deleting the iterator (at the end of ``model.fit``) waits for that sleep to end,
    cancellation or not. Measured here (one-epoch fits of 4M rows): up to 44 s between the last step and
    ``fit``'s return, in 5 of 13 fits with it on (the main thread in ``RootDataset::Iterator``'s destructor,
    the model thread in ``Model::OptimizeLoop``'s timed wait), at most 0.09 s in 9 with it off."""
    tf = import_tensorflow()
    options = tf.data.Options()
    options.autotune.enabled = False
    return options
