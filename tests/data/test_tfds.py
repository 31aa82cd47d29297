"""The TFDS source, offline: tfds.testing.mock_data serves MovieLens 100K rows in TFDS's own
feature encoding (ClassLabel integers, bytes), built from the local files."""

import tempfile

import pyarrow as pa
import pytest
import tensorflow_datasets as tfds

from scaleout.data.movielens import MovieLensFiles
from scaleout.data.tfds_source import TfdsMovieLens
from scaleout.errors import DataError
from scaleout.tfenv import import_tensorflow

tf = import_tensorflow()
ROWS = 3000


def tfds_encoded(features, row):
    """One example as TFDS's decoded dataset yields it (labels as class indices)."""
    out = {}
    for name, feature in features.items():
        value = row[name]
        if name == "movie_genres":
            value = [feature.feature.str2int(g) for g in value]
        elif name == "user_occupation_label":
            value = feature.str2int(value)
        out[name] = value
    return out


@pytest.fixture()
def mocked_tfds(ml100k, tmp_path, monkeypatch):
    # A TFDS builder whose info is not in its data_dir makes an empty temporary directory and leaves it
    # (DatasetInfo.initialize_from_bucket): here it goes to this test's own directory, not to /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    local = MovieLensFiles(str(ml100k))
    ratings = pa.Table.from_batches(list(local.interactions(ROWS))).slice(0, ROWS).to_pylist()
    movies = local.items().to_pylist()

    def as_dataset(self, split, **kwargs):
        rows = ratings if self.builder_config.name.endswith("ratings") else movies
        features = self.info.features
        return tf.data.Dataset.from_generator(
            lambda: (tfds_encoded(features, r) for r in rows), output_signature=features.get_tensor_spec())

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield local


def test_tfds_source_gives_the_same_rows_as_the_local_files(mocked_tfds):
    source = TfdsMovieLens("100k")
    assert source.columns == mocked_tfds.columns
    got = pa.Table.from_batches(list(source.interactions(1024)))
    want = pa.Table.from_batches(list(mocked_tfds.interactions(ROWS))).slice(0, ROWS)
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert source.items().to_pylist() == mocked_tfds.items().to_pylist()


def test_tfds_source_through_prepare(mocked_tfds, tmp_path):
    from scaleout.config import DataConfig
    from scaleout.data.prepare import prepare

    ds = prepare(DataConfig(source="tfds", tfds_name="100k"), tmp_path / "data")
    assert (ds.counts["train"], ds.counts["test"], ds.counts["candidates"]) == (2400, 600, 1682)
    assert ds.manifest["source"]["tfds_name"] == "movielens/100k-ratings"


def test_unknown_variant_is_refused_before_tfds_is_asked():
    with pytest.raises(DataError, match="unknown TFDS MovieLens variant '2k'"):
        TfdsMovieLens("2k")
