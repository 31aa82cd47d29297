"""A bucket for each key, from the key's own bytes: the radix partitioning of prepare's per-user group-by.

Arrow's group-by keeps one hash table of every key; past about a million string keys it no longer fits in
cache and each row costs a miss (10M users: 0.68 us a row against 0.18 at 138k). Split by a hash of the key
into 2**bits buckets, each with its own group-by, every table stays small; a key's bucket depends on nothing
but its bytes, so the same user lands in the same bucket in every chunk, and the buckets' results together
are the whole group-by's.

The hash reads three 8-byte windows of each string (its first, middle and last bytes) and its length, mixed
by multiply and xor-shift: three gathers whatever the ids' length. Ids that differ only outside those windows
(over 24 bytes) share a bucket; that costs speed (a bigger bucket), never correctness.

``string_hash64`` reads every byte instead, for lookups that want few collisions whatever the ids look like
(scaleout.data.pairs); its callers still compare the strings, so a collision costs time, never correctness.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_K = [np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xFF51AFD7ED558CCD)]


def _mix(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(33)
    h *= _K[3]
    h ^= h >> np.uint64(29)
    return h


def _words(ids: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, starts, lengths): every 8-byte window of the strings' data as little-endian words, with 8
    zero bytes either side so every window is in bounds, and where each string's first window starts."""
    n = len(ids)
    offset_type = np.int64 if pa.types.is_large_string(ids.type) or pa.types.is_large_binary(ids.type) else np.int32
    _, offsets_buffer, data_buffer = ids.buffers()
    if n == 0 or offsets_buffer is None:
        return np.zeros(16, "<u8"), np.full(n, 8, np.int64), np.zeros(n, np.int64)  # every string empty
    offsets = np.frombuffer(offsets_buffer, offset_type, count=n + 1,
                            offset=ids.offset * np.dtype(offset_type).itemsize).astype(np.int64)
    base, end = int(offsets[0]), int(offsets[-1])
    padded = np.zeros(end - base + 16, np.uint8)
    if data_buffer is not None and end > base:
        padded[8:8 + end - base] = np.frombuffer(data_buffer, np.uint8)[base:end]
    windows = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    return windows, offsets[:-1] - base + 8, np.diff(offsets)


def _string_hash(ids: pa.Array) -> np.ndarray:
    windows, starts, lengths = _words(ids)
    inside = np.minimum(lengths, 8)
    shift = ((8 - inside) * 8).astype(np.uint64)  # the bits of a window that belong to the neighbours
    empty = lengths == 0
    if empty.any():
        shift[empty] = 0  # not 64 (a shift by the width is undefined); their hash is set below
    keep = ~np.uint64(0) >> shift
    first = windows[starts] & keep
    middle = windows[starts + (lengths - inside) // 2] & keep
    last = windows[starts + lengths - 8] >> shift
    h = first * _K[0] + middle * _K[1] + last * _K[2] + lengths.astype(np.uint64)
    h[empty] = 0
    return _mix(h)


def string_hash64(ids: pa.Array) -> np.ndarray:
    """A 64-bit hash of every byte of each string (uint64; nulls hash as empty strings). The strings are
    walked 8 bytes a step, longest first, so a step costs only the strings that long: one long id does not
    make every other id pay for its length."""
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_binary(ids.type)
            or pa.types.is_large_binary(ids.type)):
        raise TypeError(f"string_hash64 hashes strings or binaries, got {ids.type}")
    windows, starts, lengths = _words(ids)
    if ids.null_count:
        lengths = np.where(ids.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    order = np.argsort(-lengths, kind="stable")
    starts, lengths = starts[order], lengths[order]
    h = lengths.astype(np.uint64) * _K[0]
    ascending = lengths[::-1]
    for step in range(0, int(lengths[0]) if len(lengths) else 0, 8):
        active = len(lengths) - int(np.searchsorted(ascending, step, side="right"))  # strings longer than step
        inside = np.minimum(lengths[:active] - step, 8)
        keep = ~np.uint64(0) >> ((8 - inside) * 8).astype(np.uint64)  # inside >= 1: shifts of 0 to 56
        h[:active] = _mix((h[:active] ^ (windows[starts[:active] + step] & keep)) * _K[1])
    out = np.empty_like(h)
    out[order] = _mix(h)
    return out


def bucket_of(keys: pa.Array | pa.ChunkedArray, bits: int) -> np.ndarray:
    """The bucket (0 .. 2**bits - 1) of each key: a function of the key alone. Strings and binaries are
    hashed by their bytes, integers by their value; nulls share a bucket; other types go through their string
    form."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    kind = keys.type
    if pa.types.is_integer(kind):
        h = _mix(pc.fill_null(keys, 0).to_numpy().astype(np.uint64) * _K[0])
    else:
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind)):
            keys = pc.cast(keys, pa.string())
        h = _string_hash(keys)
        if keys.null_count:
            h[keys.is_null().to_numpy(zero_copy_only=False)] = 0
    return (h >> np.uint64(64 - bits)).astype(np.uint16)
