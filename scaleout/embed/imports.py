"""Embeddings made elsewhere, checked and written in the embedding job's layout (``scaleout index --embeddings``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scaleout.config import EmbedConfig
from scaleout.embed.embedding_set import ID, TITLE, VECTOR, EmbeddingSet
from scaleout.embed.output import check_ids, complete_set, write_part
from scaleout.embed.parts import candidate_files, file_label, file_sha256, open_parquet
from scaleout.errors import DataError



def import_embeddings(source: str | Path, out_dir: str | Path, candidate_ids: pa.Array | None = None,
                      dim: int | None = None, part_rows: int = EmbedConfig.part_rows) -> "EmbeddingSet":
    """Checks embeddings made elsewhere (Parquet: movie_id, embedding as a list of floats, [movie_title])
    and writes them to ``out_dir`` in the embedding job's layout (scaleout.embed.output).

    DataError, naming file, row or id, for: missing columns, empty ids, lists of
    another length than ``dim`` (or than the first row), NaN or infinite values,
    repeated ids, and (with ``candidate_ids``) candidates without an embedding
    or embeddings of unknown candidates. Nothing is written unless all is well.
    """
    out_dir = Path(out_dir).resolve()
    files = candidate_files(source)
    work = out_dir.parent / f".{out_dir.name}.import-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started, number, rows = time.time(), 0, 0
    try:
        for f in files:
            pf = open_parquet(f)
            names = pf.schema_arrow.names
            if ID not in names or VECTOR not in names:
                raise DataError(f"{f}: an embeddings file needs the columns {ID!r} and {VECTOR!r} (a list of floats); "
                                f"it has {names}")
            first_row = 0
            for batch in pf.iter_batches(batch_size=part_rows, columns=[c for c in (ID, TITLE, VECTOR) if c in names]):
                vectors, dim = _vectors(f, batch, first_row, dim)
                ids = _ids(f, batch.column(ID), first_row)
                titles = batch.column(TITLE).cast(pa.string()) if TITLE in names else pa.nulls(len(ids), pa.string())
                bad = ~np.isfinite(vectors).all(axis=1)
                if bad.any():
                    i = int(bad.argmax())
                    raise DataError(f"{f}: row {first_row + i + 1}: the embedding of {ids[i].as_py()!r} holds NaN or "
                                    "infinite values")
                write_part(work, number, ids, titles, vectors, started, "import")
                number, first_row, rows = number + 1, first_row + batch.num_rows, rows + batch.num_rows
        if not rows:
            raise DataError(f"{source}: no embeddings (0 rows)")
        ids = check_ids(work, number, rows, str(source))
        if candidate_ids is not None:
            _check_coverage(source, ids, candidate_ids)
        return complete_set(work, out_dir, number, {"imported_from": str(Path(source).resolve())},
                         [{"file": file_label(f), "sha256": file_sha256(f)} for f in files], started,
                         {"backend": "import"})
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _vectors(f: Path, batch: pa.RecordBatch, first_row: int, dim: int | None) -> tuple[np.ndarray, int]:
    col = batch.column(VECTOR)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise DataError(f"{f}: column {VECTOR!r} is {col.type}; expected a list of floats")
    lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy()
    dim = dim or int(lengths[0])
    wrong = lengths != dim
    if wrong.any():
        i = int(wrong.argmax())
        got = "no embedding" if lengths[i] < 0 else f"{lengths[i]} values"
        raise DataError(f"{f}: row {first_row + i + 1}: {got} for {batch.column(ID)[i].as_py()!r}; expected {dim} "
                        "(the dimension of the query tower, or else of the first row)")
    values = col.flatten() if not pa.types.is_fixed_size_list(col.type) else col.values[col.offset * dim:
                                                                                          (col.offset + len(col)) * dim]
    try:
        flat = pc.cast(values, pa.float32()).to_numpy(zero_copy_only=False)
    except pa.ArrowException as exc:
        raise DataError(f"{f}: column {VECTOR!r} holds {values.type}; expected floats ({exc})") from exc
    if np.isnan(flat).any() and pc.any(pc.is_null(values)).as_py():
        raise DataError(f"{f}: column {VECTOR!r} has empty (null) values; expected floats")
    return flat.reshape(-1, dim), dim


def _ids(f: Path, col: pa.Array, first_row: int) -> pa.Array:
    ids = pc.cast(col, pa.string())
    empty = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True)
    if pc.any(empty).as_py():
        raise DataError(f"{f}: row {first_row + int(pc.index(empty, True).as_py()) + 1}: {ID} is empty")
    return ids


def _check_coverage(source, ids: pa.ChunkedArray, candidate_ids: pa.Array) -> None:
    missing = pc.filter(candidate_ids, pc.invert(pc.is_in(candidate_ids, value_set=ids.combine_chunks())))
    if len(missing):
        raise DataError(f"{source}: no embedding for {len(missing):,} candidates, the first {missing[0].as_py()!r}; "
                        "every candidate needs one")
    extra = pc.filter(ids, pc.invert(pc.is_in(ids, value_set=candidate_ids)))
    if len(extra):
        raise DataError(f"{source}: {len(extra):,} embeddings of ids that are not candidates, the first "
                        f"{extra[0].as_py()!r}")
