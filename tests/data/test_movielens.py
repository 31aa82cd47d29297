import shutil
import zipfile

import pyarrow as pa
import pytest

from scaleout.data.movielens import MovieLensFiles
from scaleout.errors import DataError


def rows(source):
    return pa.Table.from_batches(list(source.interactions(1_000_000))).to_pylist()


def test_100k_has_the_tfds_fields_and_values(ml100k):
    source = MovieLensFiles(str(ml100k))
    assert source.layout == "100k"
    table = rows(source)
    assert len(table) == 100_000
    # u.data line 1: "196 242 3 881250949"; u.user 196: 49|M|writer|55105; u.item 242: Kolya (1996), Comedy
    assert table[0] == {
        "user_id": "196", "movie_id": "242", "movie_title": "Kolya (1996)", "user_rating": 3.0,
        "timestamp": 881250949, "movie_genres": ["Comedy"], "bucketized_user_age": 45.0, "raw_user_age": 49.0,
        "user_gender": True, "user_occupation_label": "writer", "user_occupation_text": "writer",
        "user_zip_code": "55105",
    }
    items = source.items()
    assert items.num_rows == 1682
    # u.item 1: Toy Story with Animation, Children's (spelled Children, as TFDS does), Comedy
    assert items.slice(0, 1).to_pylist()[0] == {
        "movie_id": "1", "movie_title": "Toy Story (1995)", "movie_genres": ["Animation", "Children", "Comedy"]}
    # Titles are latin-1 in u.item and are decoded, not mangled.
    assert "Misérables, Les (1995)" in items.column("movie_title").to_pylist()
    assert len({r["user_id"] for r in table}) == 943


def test_zip_archive_reads_like_the_directory(ml100k, tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("u.data", "u.item", "u.user"):
            z.write(ml100k / name, f"ml-100k/{name}")
    from_zip = MovieLensFiles(str(archive))
    first = next(from_zip.interactions(1000)).slice(0, 5).to_pylist()
    assert first == next(MovieLensFiles(str(ml100k)).interactions(1000)).slice(0, 5).to_pylist()


def write_1m(d, ratings="1::10::5::978300760\n2::20::3::978302109\n"):
    d.mkdir(parents=True, exist_ok=True)
    (d / "movies.dat").write_bytes(
        "10::Am\xe9lie: Le Fabuleux Destin (2001)::Comedy|Children's\n20::Heat (1995)::Action|Crime\n".encode("latin-1"))
    (d / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n")
    (d / "ratings.dat").write_bytes(ratings.encode())
    return d


def test_1m_layout_with_colons_in_titles_and_tfds_labels(tmp_path):
    source = MovieLensFiles(str(write_1m(tmp_path / "ml-1m")))
    assert source.layout == "1m"
    first, second = rows(source)
    assert first["movie_title"] == "Amélie: Le Fabuleux Destin (2001)"
    assert first["movie_genres"] == ["Comedy", "Children"]
    # occupation 10 is "K-12 student", labelled "student" as in TFDS; age code kept as the bucket
    assert (first["user_occupation_text"], first["user_occupation_label"]) == ("K-12 student", "student")
    assert (first["bucketized_user_age"], first["user_gender"], first["user_zip_code"]) == (1.0, False, "48067")
    assert (second["user_occupation_text"], second["user_rating"], second["timestamp"]) == ("self-employed", 3.0, 978302109)
    assert "raw_user_age" not in first


def write_current(d, ratings="userId,movieId,rating,timestamp\n1,1,4.5,1112486027\n2,2,3.0,1112484676\n",
                  movies='movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
                         '2,Léon (1994),(no genres listed)\n'):
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.csv").write_text(ratings)
    (d / "movies.csv").write_bytes(movies.encode() if isinstance(movies, str) else movies)
    return d


def test_current_layout_reads_quoted_titles(tmp_path):
    source = MovieLensFiles(str(write_current(tmp_path / "ml-latest")))
    assert source.layout == "current"
    first, second = rows(source)
    assert first["movie_title"] == "American President, The (1995)"
    assert first["movie_genres"] == ["Comedy", "Drama", "Romance"]
    assert first["user_rating"] == 4.5
    assert second["movie_title"] == "Léon (1994)"
    assert set(first) == {"user_id", "movie_id", "movie_title", "user_rating", "timestamp", "movie_genres"}


def copy_100k(ml100k, d):
    d.mkdir()
    for name in ("u.data", "u.item", "u.user"):
        shutil.copy(ml100k / name, d / name)
    return d


def replace_line(path, line_no, text):
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = text
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("line, message", [
    (b"196\t242\t3", r"u.data, line 7: expected 4 fields separated by '\\t', found 3"),
    (b"196\t242\tgood\t881250949", r"u.data, line 7: field 'user_rating' is 'good'; expected a number"),
    (b"196\t242\t3\t88125o949", r"u.data, line 7: field 'timestamp' is '88125o949'; expected an integer"),
    (b"196\t242\t\xff\t881250949", r"u.data, line 7: bytes that are not valid utf-8"),
    (b"196\t99999\t3\t881250949", r"u.data, line 7: movie_id '99999' is not in .*u.item"),
    (b"99999\t242\t3\t881250949", r"u.data, line 7: user_id '99999' is not in .*u.user"),
])
def test_malformed_rating_lines_are_named(ml100k, tmp_path, line, message):
    d = copy_100k(ml100k, tmp_path / "ml-100k")
    replace_line(d / "u.data", 7, line)
    with pytest.raises(DataError, match=message):
        rows(MovieLensFiles(str(d)))


def test_invalid_utf8_title_in_movies_csv_names_the_line(tmp_path):
    d = write_current(tmp_path / "ml", movies=b"movieId,title,genres\n1,Ok (1995),Drama\n2,Bad \xff (1994),Drama\n")
    with pytest.raises(DataError, match=r"movies.csv, line 3: bytes that are not valid utf-8"):
        MovieLensFiles(str(d)).items()


def test_malformed_item_line_is_named(ml100k, tmp_path):
    d = copy_100k(ml100k, tmp_path / "ml-100k")
    replace_line(d / "u.item", 3, b"3|Four Rooms (1995)|01-Jan-1995")
    with pytest.raises(DataError, match=r"u.item, line 3: expected 24 fields separated by '\|', found 3"):
        MovieLensFiles(str(d)).items()


def test_missing_files_are_named(ml100k, tmp_path):
    d = copy_100k(ml100k, tmp_path / "ml-100k")
    (d / "u.user").unlink()
    with pytest.raises(DataError, match=r"has u.data but not \['u.user'\]"):
        MovieLensFiles(str(d))
    with pytest.raises(DataError, match="not a MovieLens directory"):
        MovieLensFiles(str(tmp_path))
    with pytest.raises(DataError, match="no such file or directory"):
        MovieLensFiles(str(tmp_path / "nowhere"))


def test_duplicate_movie_ids_are_refused(tmp_path):
    d = write_current(tmp_path / "ml", movies="movieId,title,genres\n1,A (1995),Drama\n1,B (1996),Drama\n")
    with pytest.raises(DataError, match="movie_id '1' appears more than once"):
        MovieLensFiles(str(d)).items()


def test_1m_errors_show_the_files_own_separator(tmp_path):
    d = write_1m(tmp_path / "ml-1m", ratings="1::10::5::978300760\n2::20::3\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 2: expected 4 fields separated by '::', found 3: '2::20::3'"):
        rows(MovieLensFiles(str(d)))
