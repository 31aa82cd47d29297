"""TFDS ``movielens/{variant}-ratings`` and ``-movies``, as the TFRS tutorial loads them.

TFDS downloads from GroupLens on first use; offline, point ``scaleout prepare``
at a local copy instead (``--source movielens --path DIR``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from scaleout.data.schema import INTERACTION_FIELDS, conform, interaction_schema
from scaleout.errors import DataError
from scaleout.tfenv import import_tensorflow

VARIANTS = ("100k", "1m", "20m", "25m", "latest-small")
# TFDS stores these as ClassLabel integers; the schema holds their names.
_CLASS_LABELS = ("movie_genres", "user_occupation_label")


class TfdsMovieLens:
    name = "tfds"

    def __init__(self, variant: str = "100k", data_dir: str | None = None):
        if variant not in VARIANTS:
            raise DataError(f"unknown TFDS MovieLens variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        import_tensorflow()
        import tensorflow_datasets as tfds

        self.variant = variant
        self.data_dir = data_dir
        self._tfds = tfds
        self._ratings, self._ratings_info = self._load(f"movielens/{variant}-ratings")
        self._movies, self._movies_info = self._load(f"movielens/{variant}-movies")
        self._columns = tuple(f.name for f in INTERACTION_FIELDS if f.name in self._ratings_info.features)

    def _load(self, name: str):
        try:
            ds, info = self._tfds.load(name, split="train", data_dir=self.data_dir, with_info=True)
        except Exception as exc:  # TFDS raises many types for a failed download
            raise DataError(
                f"TFDS could not load {name} ({type(exc).__name__}: {exc}). Without internet access, "
                "prepare from a local MovieLens directory or zip: --source movielens --path DIR"
            ) from exc
        return ds, info

    def describe(self) -> dict:
        return {"source": self.name, "tfds_name": f"movielens/{self.variant}-ratings", "data_dir": self.data_dir}

    @property
    def columns(self) -> tuple[str, ...]:
        return self._columns

    def items(self) -> pa.Table:
        batches = [self._to_arrow(b, self._movies_info, ("movie_id", "movie_title", "movie_genres"))
                   for b in _batches(self._movies, 65_536)]
        if not batches:
            raise DataError(f"TFDS movielens/{self.variant}-movies holds no movies")
        return pa.Table.from_batches(batches)

    def interactions(self, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        schema = interaction_schema(self._columns)
        where = f"TFDS movielens/{self.variant}-ratings"
        for batch in _batches(self._ratings, chunk_rows):
            yield conform(self._to_arrow(batch, self._ratings_info, self._columns), schema, where)

    @staticmethod
    def _to_arrow(batch: dict, info, columns) -> pa.RecordBatch:
        arrays = {}
        for name in columns:
            value = batch[name]
            if name in _CLASS_LABELS:
                feature = info.features[name]
                names = np.asarray((feature.feature if name == "movie_genres" else feature).names, dtype=object)
                if name == "movie_genres":
                    flat = pa.array(names[value.flat_values.numpy()], pa.string())
                    offsets = pa.array(value.row_splits.numpy().astype(np.int32))
                    arrays[name] = pa.ListArray.from_arrays(offsets, flat)
                else:
                    arrays[name] = pa.array(names[value.numpy()], pa.string())
                continue
            array = value.numpy()
            if array.dtype == object:  # tf.string -> bytes; Arrow validates UTF-8 in the cast
                arrays[name] = pa.array(array, pa.binary()).cast(pa.string())
            else:
                arrays[name] = pa.array(array)
        return pa.RecordBatch.from_pydict(arrays)


def _batches(ds, size: int):
    # ragged_batch keeps the variable-length genre lists as RaggedTensors.
    for batch in ds.ragged_batch(size):
        yield batch

