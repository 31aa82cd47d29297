"""`--source prepared`: a validation split carved out of a prepared dataset's train split alone."""

import pyarrow as pa
import pyarrow.parquet as pq

from scaleout.config import DataConfig
from scaleout.data.prepare import prepare


def rows(dataset, split):
    table = pa.concat_tables(pq.read_table(f, columns=["user_id", "movie_id", "timestamp"]) for f in dataset.files(split))
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names)))


def test_validation_split_holds_only_training_rows_and_keeps_the_candidates(ml100k_dataset, tmp_path):
    validation = prepare(DataConfig(source="prepared", path=str(ml100k_dataset.path), test_fraction=0.1, seed=0),
                         tmp_path / "validation")
    assert validation.counts["train"] + validation.counts["test"] == ml100k_dataset.counts["train"]
    assert validation.counts["test"] == round(0.1 * ml100k_dataset.counts["train"])
    assert sorted(rows(validation, "train") + rows(validation, "test")) == rows(ml100k_dataset, "train")
    assert not set(rows(validation, "test")) & set(rows(ml100k_dataset, "test"))
    # Same candidates in the same order (so towers of both share their vocabulary); counts recomputed.
    assert validation.candidates.column("movie_id").equals(ml100k_dataset.candidates.column("movie_id"))
    assert validation.candidates.column("train_count").to_pylist() != \
        ml100k_dataset.candidates.column("train_count").to_pylist()
    assert validation.manifest["source"]["source"] == "prepared"
    assert validation.users.num_rows == validation.counts["train_users"]
