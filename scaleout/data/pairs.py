"""Which (user, item) pairs a source has already given: ``--repeated-pairs first`` at any size.

A pair is one int64 key, kept in a few sorted runs (``PairSet``): 8 bytes a pair, 800 MB at 100M. A chunk's new
keys become a run of their own, merged with the runs not more than twice its size, so a key is copied about
log2(keys / chunk) times in all; one sorted array, with each chunk's keys inserted (np.insert), copied every
key kept at every chunk: at 100M generic rows (10M users, 1M items) in chunks of 1M the pairs' part took 48 s of
107 that way and 33 s of 93 this way (a merge is one stable sort of two runs, a single pass; np.insert's was 5x
slower). A chunk's keys are looked up in each run (binary search, the keys sorted). The synthetic
source's ids are integers already; generic data's are strings, which ``IdCodes`` numbers 0, 1, 2, ... in the
order they are first seen, so a pair's key is its user's code and its item's code side by side.

``IdCodes`` finds an id's code through a sorted array of 64-bit hashes of every known id (keyhash's
``string_hash64``) and then compares the strings themselves, so the codes are exact: an id whose hash an
earlier, different id already has is looked up by its string in a dictionary of such ids (at 10M ids a 64-bit
hash collides with probability about 3e-6). Each chunk costs its own rows, searched in hash order, plus one
pass over the sorted arrays to insert the new entries. The table of every pair seen that this replaces (Arrow
strings, about 100 bytes a pair) was joined against each chunk whole, so each chunk cost more than the last:
reading 20M generic rows with a third of them repeats took 45.0 s and 2.51 GiB with it, 11.2 s and 0.69 GiB
with these, 2.5 s keeping every row (benchmarks/generic_pairs.py measures the last two).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaleout.data.keyhash import string_hash64


class PairSet:
    """The keys kept so far (int64): a few sorted runs, each more than twice the size of the next, so that a chunk's
    new keys are merged into a run of their own size, not into every key kept (see the module docstring)."""

    def __init__(self):
        self.runs: list[np.ndarray] = []  # sorted, disjoint; sizes falling by more than half from one to the next

    def __len__(self) -> int:
        return sum(len(run) for run in self.runs)

    @property
    def keys(self) -> np.ndarray:
        """Every key kept, sorted."""
        return np.sort(np.concatenate(self.runs)) if self.runs else np.empty(0, np.int64)

    def first_new(self, keys: np.ndarray, at_most: int | None = None) -> np.ndarray:
        """The positions, in order, of the first ``at_most`` (every one if None) of ``keys`` that are neither
        kept nor earlier in ``keys``; their keys are kept from now on."""
        unique, first = np.unique(keys, return_index=True)
        new = ~self._kept(unique)
        positions = np.sort(first[new])
        if at_most is not None and len(positions) > at_most:
            positions = positions[:at_most]
            added = np.sort(keys[positions])
        else:
            added = unique[new]  # sorted
        self._add(added.astype(np.int64, copy=False))
        return positions

    def _kept(self, unique: np.ndarray) -> np.ndarray:
        """[len(unique)] whether each of ``unique`` (sorted) is kept."""
        kept = np.zeros(len(unique), bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, unique), len(run) - 1)
            kept |= run[at] == unique
        return kept

    def _add(self, added: np.ndarray) -> None:
        """Keeps ``added`` (sorted, none kept yet) as a run, merging it with the runs not more than twice its
        size."""
        if not len(added):
            return
        self.runs.append(added)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            merged = np.concatenate((self.runs.pop(-2), self.runs.pop()))
            merged.sort(kind="stable")  # two sorted runs: timsort merges them in one pass
            self.runs.append(merged)


class IdCodes:
    """A code for each distinct string id, 0, 1, 2, ... in the order first seen (see the module docstring).
    ``hash`` is for tests, which force collisions through it."""

    def __init__(self, hash=string_hash64):
        self._hash = hash
        self.hashes = np.empty(0, np.uint64)  # sorted; one entry per distinct hash
        self.first = np.empty(0, np.int64)  # the code of the first id seen with each hash
        self.ids: list[pa.Array] = []  # every id, in code order
        self.count = 0
        self.collided: dict[str, int] = {}  # ids whose hash an earlier, different id has: their codes

    def codes(self, ids: pa.Array) -> np.ndarray:
        """The code of each of ``ids`` (int64, one per row; no nulls), numbering the new ones."""
        if ids.null_count:
            raise ValueError("ids to number must not be null")
        encoded = pc.dictionary_encode(ids)
        distinct = encoded.dictionary  # in order of first appearance
        h = self._hash(distinct)
        code = np.full(len(distinct), -1, np.int64)
        by_hash = np.argsort(h)
        at = np.empty(len(h), np.int64)  # searched in hash order: random needles miss the cache (10x slower)
        at[by_hash] = np.searchsorted(self.hashes, h[by_hash])
        hit = at < len(self.hashes)
        hit[hit] = self.hashes[at[hit]] == h[hit]
        hits = np.flatnonzero(hit)
        if len(hits):
            known = self.first[at[hits]]
            same = pc.equal(pa.chunked_array(self.ids, distinct.type).take(pa.array(known)),
                            distinct.take(pa.array(hits))).to_numpy(zero_copy_only=False)
            code[hits[same]] = known[same]
            for i in hits[~same]:  # another id has this hash
                code[i] = self.collided.get(distinct[int(i)].as_py(), -1)
        is_new = code < 0
        new = np.flatnonzero(is_new)
        code[new] = self.count + np.arange(len(new))
        if len(new):
            self.ids.append(distinct.take(pa.array(new)))
            self.count += len(new)
            new_by_hash = by_hash[is_new[by_hash]]
            sorted_h = h[new_by_hash]
            first_of_hash = np.ones(len(new), bool)
            first_of_hash[1:] = sorted_h[1:] != sorted_h[:-1]
            fresh = first_of_hash & ~hit[new_by_hash]  # a hash no known id has, at one of its new ids
            for i in new_by_hash[~fresh]:
                self.collided[distinct[int(i)].as_py()] = int(code[i])
            added = new_by_hash[fresh]  # in hash order, and no known id has their hashes: ``at`` is where they go
            self.hashes = np.insert(self.hashes, at[added], h[added])
            self.first = np.insert(self.first, at[added], code[added])
        return code[encoded.indices.to_numpy()]
