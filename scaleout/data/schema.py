"""The one Arrow schema every source is normalised to.

Field names and types follow TFDS ``movielens/*-ratings`` so that the TFDS
source and local MovieLens files give identical tables. Two deliberate
differences: ``movie_genres`` holds genre names and ``user_occupation_label``
the label text, where TFDS stores ClassLabel integers (names are what the
feature towers and people read). Generic and synthetic data use the same
names: their ``item_id`` becomes ``movie_id`` and their title ``movie_title``.

Columns a dataset does not have are left out, never filled with placeholders.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from scaleout.errors import DataError

REQUIRED = ("user_id", "movie_id", "movie_title")

# Every column a source may provide, in the order tables are written.
INTERACTION_FIELDS = (
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("movie_id", pa.string(), nullable=False),
    pa.field("movie_title", pa.string(), nullable=False),
    pa.field("user_rating", pa.float32()),
    pa.field("timestamp", pa.int64()),
    pa.field("movie_genres", pa.list_(pa.string())),
    pa.field("bucketized_user_age", pa.float32()),
    pa.field("raw_user_age", pa.float32()),
    pa.field("user_gender", pa.bool_()),
    pa.field("user_occupation_label", pa.string()),
    pa.field("user_occupation_text", pa.string()),
    pa.field("user_zip_code", pa.string()),
)
_BY_NAME = {f.name: f for f in INTERACTION_FIELDS}

CANDIDATE_FIELDS = (
    pa.field("movie_id", pa.string(), nullable=False),
    pa.field("movie_title", pa.string(), nullable=False),
    pa.field("movie_genres", pa.list_(pa.string())),
    # Occurrences in the train split: item frequencies for popularity
    # baselines and sampling-bias correction.
    pa.field("train_count", pa.int64(), nullable=False),
)


def interaction_schema(columns: list[str] | tuple[str, ...]) -> pa.Schema:
    """The canonical schema restricted to ``columns`` (in canonical order)."""
    unknown = [c for c in columns if c not in _BY_NAME]
    if unknown:
        raise DataError(f"columns {unknown} are not part of the interaction schema {list(_BY_NAME)}")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(f"interaction tables need columns {list(REQUIRED)}; missing {missing}")
    return pa.schema([f for f in INTERACTION_FIELDS if f.name in columns])


def conform(batch: pa.RecordBatch, schema: pa.Schema, where: str) -> pa.RecordBatch:
    """Casts ``batch`` to ``schema`` (column order included); ``where`` names the input in errors."""
    missing = [name for name in schema.names if name not in batch.schema.names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; expected {schema.names}")
    columns = []
    for field in schema:
        column = batch.column(batch.schema.get_field_index(field.name))
        if not field.nullable:
            empty = column.null_count
            if pa.types.is_string(column.type):
                empty += pc.sum(pc.equal(pc.utf8_length(column), 0)).as_py() or 0
            if empty:
                raise DataError(f"{where}: column {field.name!r} has {empty} empty value(s); it is required")
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{where}: column {field.name!r} cannot be read as {field.type}: {exc}") from exc
    return pa.RecordBatch.from_arrays(columns, schema=schema)
