"""A finished candidate-embeddings directory (written by scaleout.embed.job), read back and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.errors import ArtifactError
from scaleout.fsutil import read_manifest, sha256
from scaleout.names import EMBEDDING, MOVIE_ID, MOVIE_TITLE

ID, TITLE, VECTOR = MOVIE_ID, MOVIE_TITLE, EMBEDDING
EMBEDDINGS_JSON = "embeddings.json"
FORMAT = "scaleout-embeddings/1"


class EmbeddingSet:
    """A finished embeddings directory, read back and checked against its embeddings.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = read_manifest(self.path / EMBEDDINGS_JSON, FORMAT, f"{self.path}: no candidate embeddings "
                                  f"here (no {EMBEDDINGS_JSON}); run `scaleout index` first")
        missing = [key for key in ("parts", "dim", "candidates", "fingerprint") if key not in self.meta]
        if missing:
            raise ArtifactError(f"{self.path / EMBEDDINGS_JSON}: no {', '.join(map(repr, missing))}; it is damaged: "
                                "run `scaleout index` again")
        for e in self.meta["parts"]:
            f = self.path / e["name"]
            if not f.is_file() or f.stat().st_size != e["bytes"]:
                raise ArtifactError(f"{f}: missing or truncated ({EMBEDDINGS_JSON} says {e['bytes']} bytes)")
        self.verify()

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def dim(self) -> int:
        return self.meta["dim"]

    def __len__(self) -> int:
        return self.meta["candidates"]

    def verify(self) -> None:
        """Checks each part's sha256 (hashed once per file state); ArtifactError names the first that differs."""
        for e in self.meta["parts"]:
            if sha256(self.path / e["name"]) != e["sha256"]:
                raise ArtifactError(f"{self.path / e['name']}: checksum differs from {EMBEDDINGS_JSON}")

    def load(self, titles: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(ids [n] str, embeddings [n, dim] float32, titles [n] str or None), read part by part."""
        n, dim = len(self), self.dim
        vectors = np.empty((n, dim), dtype=np.float32)
        ids, names, row = [], [], 0
        columns = [ID, VECTOR] + ([TITLE] if titles else [])
        for e in self.meta["parts"]:
            try:
                table = pq.read_table(self.path / e["name"], columns=columns)
            except (OSError, pa.ArrowException) as exc:
                raise ArtifactError(f"{self.path / e['name']}: unreadable ({exc})") from exc
            if table.num_rows != e["rows"]:
                raise ArtifactError(f"{self.path / e['name']}: {table.num_rows} rows; {EMBEDDINGS_JSON} says {e['rows']}")
            flat = table.column(VECTOR).combine_chunks().flatten().to_numpy()
            vectors[row:row + table.num_rows] = flat.reshape(-1, dim)
            ids.append(np.asarray(table.column(ID).to_numpy(zero_copy_only=False), dtype=str))
            if titles:
                names.append(np.asarray(table.column(TITLE).fill_null("").to_numpy(zero_copy_only=False), dtype=str))
            row += table.num_rows
        return np.concatenate(ids), vectors, (np.concatenate(names) if titles else None)
