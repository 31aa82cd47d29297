"""A prepared dataset's train split as a source, to carve a validation split out of it.

``scaleout prepare --source prepared --path RUN/data --test-fraction 0.1 --out VAL``
writes a dataset whose train and test splits are both drawn from RUN/data's
train split, so settings can be chosen without looking at its test split.
Candidates (with every column but the counts, which prepare recomputes) are
RUN/data's, so the towers of both datasets have the same candidate vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.data.dataset import Dataset


class PreparedTrain:
    name = "prepared"

    def __init__(self, path: str | Path):
        self.dataset = Dataset(path)
        self.columns = tuple(self.dataset.columns)

    def describe(self) -> dict:
        return {"source": self.name, "path": str(self.dataset.path), "split": "train",
                "dataset_created": self.dataset.manifest["created"]}

    def items(self) -> pa.Table:
        candidates = self.dataset.candidates
        return candidates.drop_columns([c for c in ("train_count",) if c in candidates.column_names])

    def interactions(self, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        for path in self.dataset.files("train"):
            yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
