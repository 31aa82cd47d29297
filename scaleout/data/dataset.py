"""A prepared dataset directory (see scaleout.data.prepare), read back and checked."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.errors import ArtifactError
from scaleout.fsutil import json_fingerprint, read_manifest, sha256

MANIFEST = "manifest.json"
FORMAT = "scaleout-dataset/1"


class Dataset:
    """A prepared dataset; opening it checks every file against the manifest's checksums (``verify``)."""

    def __init__(self, path: str | Path, verify: bool = True, partial: bool = False):
        """``partial``: files the manifest lists may be absent (a Ray worker fetches only its own shards)."""
        self.path = Path(path)
        self.manifest = read_manifest(self.path / MANIFEST, FORMAT, f"{self.path}: not a prepared dataset "
                                      f"(no {MANIFEST}); run `scaleout prepare` first")
        missing = [name for name in self.manifest["files"] if not (self.path / name).is_file()]
        if missing and not partial:
            raise ArtifactError(f"{self.path}: files listed in {MANIFEST} are missing: {missing[:5]}")
        if verify:
            self.verify()

    def verify(self) -> None:
        """Checks every file's checksum (hashed once per file state: see scaleout.fsutil.sha256); ArtifactError
        names the first that differs."""
        for name, entry in self.manifest["files"].items():
            if not (self.path / name).is_file():
                continue  # a partial dataset's
            if sha256(self.path / name) != entry["sha256"]:
                raise ArtifactError(f"{self.path / name}: checksum differs from {MANIFEST}; the file changed "
                                    "after it was prepared")

    @property
    def fingerprint(self) -> str:
        """sha256 over the manifest's checksums of every file: what the data is, whatever its path or time."""
        return json_fingerprint(self.manifest["files"])

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]

    @property
    def columns(self) -> list[str]:
        return list(self.manifest["schema"])

    def files(self, split: str) -> list[Path]:
        if split not in self.manifest["shards"]:
            raise ArtifactError(f"{self.path}: no split {split!r}; expected one of {list(self.manifest['shards'])}")
        return [self.path / name for name in self.manifest["shards"][split]]

    @cached_property
    def candidates(self) -> pa.Table:
        return pq.read_table(self.path / "candidates.parquet")

    @cached_property
    def users(self) -> pa.Table | None:
        """users.parquet (one row per train user, in vocabulary order), or None for a dataset prepared without it."""
        path = self.path / "users.parquet"
        return pq.read_table(path) if path.is_file() else None

    def vocabulary(self, column: str) -> np.ndarray:
        """The ids of ``column`` (``user_id`` or ``movie_id``), most frequent first, as str."""
        return self._vocab(column, column).to_numpy(zero_copy_only=False).astype(str)

    def vocabulary_counts(self, column: str) -> np.ndarray:
        """Each id's interactions in the train split, in ``vocabulary(column)``'s order (int64)."""
        return self._vocab(column, "count").to_numpy().astype(np.int64)

    def _vocab(self, column: str, field: str) -> pa.ChunkedArray:
        path = self.path / "vocab" / f"{column}.parquet"
        if not path.is_file():
            raise ArtifactError(f"{path}: no vocabulary for {column!r}")
        names = pq.read_schema(path).names
        if field not in names:
            raise ArtifactError(f"{path}: no {field!r} column; found {names}; prepare the data again")
        return pq.read_table(path, columns=[field]).column(field)
