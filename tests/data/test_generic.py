import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import scaleout.data.generic as generic
from scaleout.config import DataConfig
from scaleout.data.generic import GenericInteractions
from scaleout.data.generic_values import first_uncast
from scaleout.data.prepare import prepare
from scaleout.errors import DataError


def read_all(source):
    return pa.Table.from_batches(list(source.interactions(1000))).to_pylist()


def test_csv_with_titles_and_extra_columns(tmp_path):
    f = tmp_path / "events.csv"
    f.write_text('user_id,item_id,timestamp,item_title,device\nu1,i1,100,"Book, The",web\nu2,i2,200,Film,app\n')
    source = GenericInteractions(str(f))
    assert source.columns == ("user_id", "movie_id", "movie_title", "timestamp")
    assert read_all(source) == [
        {"user_id": "u1", "movie_id": "i1", "movie_title": "Book, The", "timestamp": 100},
        {"user_id": "u2", "movie_id": "i2", "movie_title": "Film", "timestamp": 200},
    ]


def test_parquet_directory_without_titles_uses_item_ids(tmp_path):
    d = tmp_path / "events"
    d.mkdir()
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [10, 20], "rating": [4.0, 5.0]}), d / "a.parquet")
    pq.write_table(pa.table({"user_id": [3], "item_id": [10], "rating": [1.0]}), d / "b.parquet")
    rows = read_all(GenericInteractions(str(d)))
    assert rows == [
        {"user_id": "1", "movie_id": "10", "movie_title": "10", "user_rating": 4.0},
        {"user_id": "2", "movie_id": "20", "movie_title": "20", "user_rating": 5.0},
        {"user_id": "3", "movie_id": "10", "movie_title": "10", "user_rating": 1.0},
    ]


def test_candidates_are_the_distinct_items_with_first_titles(tmp_path):
    f = tmp_path / "events.csv"
    lines = ["user_id,item_id,title"] + [f"u{i % 7},i{i % 5},title {i % 5}" for i in range(50)]
    f.write_text("\n".join(lines) + "\n")
    ds = prepare(DataConfig(source="generic", path=str(f), train_shards=2, chunk_rows=8, repeated_pairs="all"),
                 tmp_path / "data")
    cand = ds.candidates.to_pylist()
    assert [c["movie_id"] for c in cand] == ["i0", "i1", "i2", "i3", "i4"]
    assert all(c["movie_title"] == f"title {c['movie_id'][1:]}" for c in cand)
    assert sum(c["train_count"] for c in cand) == ds.counts["train"] == 40


def test_a_row_without_a_title_gets_its_item_id_and_the_candidate_its_first_real_title(tmp_path, caplog):
    import logging

    f = tmp_path / "events.parquet"
    # i1's first rows have no title (null, empty, blank), a later chunk's has; i2 never has one
    pq.write_table(pa.table({"user_id": [f"u{n}" for n in range(8)],
                             "item_id": ["i1", "i1", "i2", "i1", "i3", "i1", "i2", "i1"],
                             "title": [None, "", "  ", None, "Three", "Film", None, "Later"]}), f)
    with caplog.at_level(logging.INFO, logger="scaleout.data.generic"):
        rows = read_all(GenericInteractions(str(f), "all"))
    assert [r["movie_title"] for r in rows] == ["i1", "i1", "i2", "i1", "Three", "Film", "i2", "Later"]
    assert "events.parquet: 5 rows with an empty item title; their item id stands in" in caplog.text
    ds = prepare(DataConfig(source="generic", path=str(f), chunk_rows=2, repeated_pairs="all", test_fraction=0.25),
                 tmp_path / "data")
    assert {c["movie_id"]: c["movie_title"] for c in ds.candidates.to_pylist()} == {
        "i1": "Film", "i2": "i2", "i3": "Three"}
    # numbers as titles read as written
    pq.write_table(pa.table({"user_id": ["u", "v"], "item_id": ["a", "b"], "title": [1.5, 2.0]}), f)
    assert [r["movie_title"] for r in read_all(GenericInteractions(str(f)))] == ["1.5", "2"]
    # refused: a title column of lists, naming it; bytes that are not UTF-8, by row
    for titles, message in ((pa.array([[1], [2]]), "events.parquet: column 'title' is of type list<element: int64>; "
                                                   "expected text (an item's title)"),
                            (pa.array([b"ok", b"\xff"]), "events.parquet, row 2: field 'title' is the bytes b'\\xff', "
                                                         "which are not UTF-8 text; expected a title written as UTF-8")):
        pq.write_table(pa.table({"user_id": ["u", "v"], "item_id": ["a", "b"], "title": titles}), f)
        with pytest.raises(DataError, match=re.escape(message)):
            read_all(GenericInteractions(str(f)))


def test_missing_columns_and_bad_rows_are_named(tmp_path):
    f = tmp_path / "events.csv"
    f.write_text("user,item_id\nu1,i1\n")
    with pytest.raises(DataError, match=r"events.csv: missing column\(s\) \['user_id'\]; found \['user', 'item_id'\]"):
        GenericInteractions(str(f))
    f.write_text("user_id,item_id,timestamp\nu1,i1,100\nu2,i2,yesterday\n")
    with pytest.raises(DataError, match="events.csv, line 3: field 'timestamp' is 'yesterday'; expected a whole"):
        read_all(GenericInteractions(str(f)))
    f.write_text("user_id,item_id\nu1,i1\n,i2\n")
    with pytest.raises(DataError, match=r"events.csv, line 3: field 'user_id' is empty; every interaction needs one"):
        read_all(GenericInteractions(str(f)))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"x.json: expected a .csv \(or .csv.gz, .csv.bz2, .csv.zst\) or .parquet file"):
        GenericInteractions(str(tmp_path / "x.json"))


def _compressed(path, data: bytes):
    """``data`` written to ``path`` in the codec its name ends with."""
    import bz2
    import gzip
    name = path.name.lower()
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif name.endswith(".bz2"):
        path.write_bytes(bz2.compress(data))
    elif name.endswith(".zst"):
        with pa.CompressedOutputStream(str(path), "zstd") as out:
            out.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("ending", [".csv.gz", ".csv.bz2", ".csv.zst", ".CSV.GZ"])
def test_a_compressed_csv_reads_as_its_text_and_its_errors_name_the_texts_lines(tmp_path, ending):
    text = "\ufeffuser_id,item_id,rating,title\r\n" + "".join(f'u{n % 37},i{n % 53},{n % 5 + 1},"T, {n}"\r\n'
                                                               for n in range(3000))
    (tmp_path / "plain.csv").write_text(text, encoding="utf-8", newline="")
    _compressed(tmp_path / f"packed{ending}", text.encode())
    plain = read_all(GenericInteractions(str(tmp_path / "plain.csv"), "all"))
    packed = read_all(GenericInteractions(str(tmp_path / f"packed{ending}"), "all"))
    assert len(packed) == 3000 and packed == plain and packed[1]["movie_title"] == "T, 1"
    # a directory reads the compressed files beside the plain ones, in name order
    both = GenericInteractions(str(tmp_path), "all")
    assert [p.name for p in both.paths] == [f"packed{ending}", "plain.csv"]
    assert len(read_all(both)) == 6000
    # a refused value is named by its line in the uncompressed text: a check Arrow makes, then one of scaleout's
    bad = tmp_path / "bad"
    bad.mkdir()
    _compressed(bad / f"e{ending}", b"user_id,item_id,rating\nu1,i1,5\n\nu2,i2,five\n")
    with pytest.raises(DataError, match=rf"e{re.escape(ending)}, line 4: field 'rating' is 'five'; expected a number"):
        read_all(GenericInteractions(str(bad / f"e{ending}")))
    _compressed(bad / f"e{ending}", b"user_id,item_id\nu1,i1\n\nu2,i2\n  ,i3\n")
    with pytest.raises(DataError, match=rf"e{re.escape(ending)}, line 5: field 'user_id' is empty"):
        read_all(GenericInteractions(str(bad / f"e{ending}")))


@pytest.mark.parametrize("ending, codec", [(".csv.gz", "gzip"), (".csv.bz2", "bz2"), (".csv.zst", "zstd")])
def test_a_compressed_csv_cut_short_or_not_compressed_is_refused_naming_it(tmp_path, ending, codec):
    rows = b"user_id,item_id\n" + b"".join(b"u%d,i%d\n" % (n, n % 7) for n in range(20000))
    path = tmp_path / f"events{ending}"
    _compressed(path, rows)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])  # a download cut short
    with pytest.raises(DataError, match=rf"events{re.escape(ending)}: not readable as {codec}-compressed text"):
        read_all(GenericInteractions(str(path)))
    path.write_bytes(rows)  # plain text under a compressed name: refused at its header
    with pytest.raises(DataError, match=rf"events{re.escape(ending)}: not readable as {codec}-compressed text"):
        GenericInteractions(str(path))


@pytest.mark.parametrize("ending", [".csv.gz", ".csv.bz2", ".csv.zst"])
def test_a_compressed_csv_cut_short_is_refused_by_every_way_of_reading_it(tmp_path, ending):
    import io

    from scaleout.data.generic import _unpacked

    path = tmp_path / f"events{ending}"
    _compressed(path, b"user_id,item_id\n" + b"".join(b"u%d,i%d\n" % (n, n % 7) for n in range(20000)))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    ways = {"read": lambda f: f.read(4096), "read1": lambda f: f.read1(4096), "readline": lambda f: f.readline(),
            "readinto": lambda f: f.readinto(bytearray(4096)), "readinto1": lambda f: f.readinto1(bytearray(4096)),
            # peek alone reads the stream: the bytes it buffered are taken by the unwrapped read, from the buffer
            "peek": lambda f: io.BufferedReader.read(f, len(f.peek(4096))), "iteration": lambda f: next(f, b""),
            "readlines": lambda f: f.readlines()}
    for way, call in ways.items():
        with _unpacked(path) as f, pytest.raises(DataError, match=f"events{re.escape(ending)}: not readable"):
            while call(f):
                pass


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id,rating\nu1,i1,5\nu2,i2,nan\n", "line 3: field 'rating' is empty or NaN; expected a finite number"),
    ("user_id,item_id,rating\nu1,i1,5\n\nu2,i2,-inf\n", "line 4: field 'rating' is -inf; expected a finite number"),
    ("user_id,item_id\nu1,i1\nu2,  \t\n", "line 3: field 'item_id' is empty; every interaction needs one"),
    ("user_id,item_id,timestamp\nu1,i1,1\nu2,i2,99999999999999999999\n",
     "line 3: field 'timestamp' is '99999999999999999999'; expected a whole number of seconds"),
])
def test_non_finite_ratings_blank_ids_and_overflows_are_named_by_line(tmp_path, content, message):
    f = tmp_path / "events.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=re.escape(f"{f}, {message}")):
        read_all(GenericInteractions(str(f)))


def test_a_byte_order_mark_is_accepted_and_parquet_rows_are_named(tmp_path):
    f = tmp_path / "events.csv"
    f.write_bytes(b"\xef\xbb\xbfuser_id,item_id\nu1,i1\n")
    assert read_all(GenericInteractions(str(f))) == [{"user_id": "u1", "movie_id": "i1", "movie_title": "i1"}]
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "rating": [1.0, float("inf")]}),
                   tmp_path / "events.parquet")
    with pytest.raises(DataError, match=r"events.parquet, row 2: field 'rating' is inf"):
        read_all(GenericInteractions(str(tmp_path / "events.parquet")))


def test_repeated_pairs_keep_the_first_row_so_no_pair_is_in_both_splits_unless_all_are_asked_for(tmp_path):
    f = tmp_path / "events.csv"
    rows = [f"u{i % 4},i{i % 3},{i}" for i in range(60)]  # 12 distinct pairs, each 5 times
    f.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    kept = read_all(GenericInteractions(str(f)))
    assert [r["timestamp"] for r in kept] == list(range(12))  # the first row of each pair, in file order
    ds = prepare(DataConfig(source="generic", path=str(f), chunk_rows=7, test_fraction=0.3), tmp_path / "data")
    pairs = {split: {(r["user_id"], r["movie_id"]) for p in ds.files(split) for r in pq.read_table(p).to_pylist()}
             for split in ("train", "test")}
    assert ds.counts["interactions"] == 12 and not pairs["train"] & pairs["test"]
    everything = read_all(GenericInteractions(str(f), repeated_pairs="all"))
    assert len(everything) == 60


def test_repeated_pairs_across_chunks_and_files_keep_each_pairs_first_row(tmp_path):
    """Against a dictionary of the pairs seen: ids of many shapes (long ones differing in one byte, unicode,
    ones that read as numbers), pairs repeated within a chunk, across chunks and across files."""
    rng = np.random.default_rng(7)
    users = [f"user-{i}" for i in range(30)] + ["k" * 30 + str(i) + "k" * 30 for i in range(10)] + ["日本", "07", "7"]
    items = [f"i{i}" for i in range(25)] + ["x" * 50, "x" * 51, "é"]
    d = tmp_path / "events"
    d.mkdir()
    expected, seen, t = [], set(), 0
    for name in ("a.parquet", "b.parquet"):
        u, i = rng.choice(users, 700), rng.choice(items, 700)
        ts = np.arange(t, t + 700)
        t += 700
        pq.write_table(pa.table({"user_id": u, "item_id": i, "timestamp": ts}), d / name)
        for row in zip(u.tolist(), i.tolist(), ts.tolist()):
            if row[:2] not in seen:
                seen.add(row[:2])
                expected.append(row)
    source = GenericInteractions(str(d))
    kept = pa.Table.from_batches(list(source.interactions(64))).to_pylist()
    assert [(r["user_id"], r["movie_id"], r["timestamp"]) for r in kept] == expected
    assert 300 < len(expected) < 1400  # repeats in the data


def test_float_id_columns_read_as_the_whole_numbers_they_hold(tmp_path):
    # pandas writes an integer column as float64 once it held a missing value: 2.0 is user "2", as in an int column.
    d = tmp_path / "events"
    d.mkdir()
    pq.write_table(pa.table({"user_id": [1.0, 2.0], "item_id": pa.array([10.0, -20.0], pa.float32())}),
                   d / "a.parquet")
    pq.write_table(pa.table({"user_id": [2], "item_id": [10]}), d / "b.parquet")
    assert read_all(GenericInteractions(str(d))) == [
        {"user_id": "1", "movie_id": "10", "movie_title": "10"},
        {"user_id": "2", "movie_id": "-20", "movie_title": "-20"},
        {"user_id": "2", "movie_id": "10", "movie_title": "10"},
    ]
    below = [2.0 ** 53 - 1, 2.0 ** 24 - 1]  # the largest whole numbers each width holds with their neighbours
    pq.write_table(pa.table({"user_id": pa.array(below[:1], pa.float64()),
                             "item_id": pa.array(below[1:], pa.float32())}), tmp_path / "big.parquet")
    assert read_all(GenericInteractions(str(tmp_path / "big.parquet"))) == [
        {"user_id": "9007199254740991", "movie_id": "16777215", "movie_title": "16777215"}]
    for ids, type_, message in (
            ([1.0, 2.5], pa.float64(), "row 2: field 'user_id' is 2.5 in a float64 column; expected whole numbers"),
            ([1.0, None], pa.float64(), "row 2: field 'user_id' is empty or NaN in a float64 column"),
            ([float("nan"), 1.0], pa.float64(), "row 1: field 'user_id' is empty or NaN"),
            ([1.0, 2.0 ** 64], pa.float64(), "row 2: field 'user_id' is 1.8446744073709552e\\+19"),
            # 2^53 + 1 is written as 2^53: the id read would not be the one meant
            ([1.0, 2.0 ** 53 + 1], pa.float64(), "row 2: field 'user_id' is 9007199254740992.0 .* below 2\\^53"),
            ([2.0 ** 24 + 1, 1.0], pa.float32(), "row 1: field 'user_id' is 16777216.0 in a float32 column; "
                                                 "expected whole numbers .* below 2\\^24")):
        pq.write_table(pa.table({"user_id": pa.array(ids, type_), "item_id": ["i", "j"]}), tmp_path / "bad.parquet")
        with pytest.raises(DataError, match=f"bad.parquet, {message}"):
            read_all(GenericInteractions(str(tmp_path / "bad.parquet")))


def test_timestamps_and_ratings_that_are_not_numbers_are_refused_by_row_and_dates_read_as_seconds(tmp_path):
    import datetime

    def parquet(name, **columns):
        pq.write_table(pa.table({"user_id": ["u1", "u2", "u3"], "item_id": ["i", "j", "k"], **columns}),
                       tmp_path / name)
        return str(tmp_path / name)

    # pandas writes datetimes as an Arrow timestamp column, here in microseconds: read as seconds, UTC
    when = [datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 2, 10, 0, 0, 500000),
            datetime.datetime(2021, 1, 1)]
    for column in (pa.array(when, pa.timestamp("us")), pa.array(when, pa.timestamp("ms", tz="UTC")),
                   pa.array([w.date() for w in when], pa.date32())):
        rows = read_all(GenericInteractions(parquet("dates.parquet", timestamp=column)))
        seconds = [1577836800, 1577959200, 1609459200] if not pa.types.is_date(column.type) else \
            [1577836800, 1577923200, 1609459200]
        assert [r["timestamp"] for r in rows] == seconds, column.type
    # whole floats and numeric strings cast as before
    rows = read_all(GenericInteractions(parquet("ok.parquet", timestamp=[1.0, 2.0, 3.0], rating=["1", "2.5", "4"])))
    assert [(r["timestamp"], r["user_rating"]) for r in rows] == [(1, 1.0), (2, 2.5), (3, 4.0)]
    refused = [
        (dict(timestamp=["5", "6", "2020-01-01"]), "row 3: field 'timestamp' is '2020-01-01'; expected a whole number"),
        (dict(timestamp=[1.0, 2.5, 3.0]), "row 2: field 'timestamp' is 2.5; expected a whole number of seconds"),
        (dict(timestamp=pa.array([1, None, 3], pa.int64())), "row 2: field 'timestamp' is empty"),
        (dict(timestamp=pa.array([[1], [2], [3]])),
         ": column 'timestamp' is of type list<.*>; expected a whole number of seconds in each row"),
        (dict(rating=["1", "abc", "3"]), "row 2: field 'rating' is 'abc'; expected a finite number"),
        (dict(timestamp=[True, False, True]), ": column 'timestamp' is of type bool; expected a whole number"),
    ]
    for columns, message in refused:
        with pytest.raises(DataError, match=f"bad.parquet{message if message[0] == ':' else ', ' + message}"):
            read_all(GenericInteractions(parquet("bad.parquet", **columns)))
    f = tmp_path / "events.csv"
    f.write_text("user_id,item_id,timestamp\nu1,i1,1\n\nu2,i2,\n")
    with pytest.raises(DataError, match="events.csv, line 4: field 'timestamp' is empty"):
        read_all(GenericInteractions(str(f)))


def test_timestamps_written_as_whole_floats_read_as_whole_seconds_and_fractions_are_refused_by_line(tmp_path):
    # pandas writes an integer column that once held a missing value as floats: 978300760.0
    f = tmp_path / "events.csv"
    f.write_text("user_id,item_id,timestamp\nu1,i1,978300760.0\nu2,i2, 978300761 \nu1,i2,978300762.000\n"
                 "u2,i1,-5.\nu3,i3,9007199254740993.0\n")
    rows = read_all(GenericInteractions(str(f)))
    # exact past 2^53, where a float would round 9007199254740993 to ...992: the zeros are cut from the text
    assert [r["timestamp"] for r in rows] == [978300760, 978300761, 978300762, -5, 9007199254740993]
    # the same in a Parquet string column, as in a float column of whole numbers
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["i", "j"], "timestamp": ["5.0", " 6"]}),
                   tmp_path / "text.parquet")
    assert [r["timestamp"] for r in read_all(GenericInteractions(str(tmp_path / "text.parquet")))] == [5, 6]
    for value in ("978300760.5", "nan", "1e9", ".", "5.0.0", "1_000"):
        f.write_text(f"user_id,item_id,timestamp\nu1,i1,1.0\n\nu2,i2,{value}\n")
        with pytest.raises(DataError, match=re.escape(f"events.csv, line 4: field 'timestamp' is {value!r}; "
                                                      "expected a whole number of seconds")):
            read_all(GenericInteractions(str(f)))
    f.write_text("user_id,item_id,timestamp\nu1,i1,1.0\nu2,i2,  \n")  # blank after trimming: empty, as before
    with pytest.raises(DataError, match="events.csv, line 3: field 'timestamp' is empty"):
        read_all(GenericInteractions(str(f)))


def test_timestamps_written_as_iso_8601_text_read_as_a_parquet_timestamp_column_reads_them(tmp_path):
    import calendar
    import datetime

    def utc(*fields):
        return calendar.timegm(datetime.datetime(*fields).timetuple())

    half_past = utc(2020, 1, 31, 12, 30)
    written = {"2020-01-31 12:30:00": half_past, " 2020-01-31T12:30:00Z ": half_past,
               "2020-01-31T14:30:00+02:00": half_past, "2020-01-31T07:30:00-0500": half_past,
               "2020-01-31T12:30:59.75": half_past + 59, "2020-01-31": utc(2020, 1, 31), "2020-01-31T12:30": half_past,
               "1969-07-20 20:17:40": utc(1969, 7, 20, 20, 17, 40)}
    f = tmp_path / "events.csv"
    f.write_text("user_id,item_id,timestamp\n" + "".join(f"u{n},i{n},{w}\n" for n, w in enumerate(written)))
    assert [r["timestamp"] for r in read_all(GenericInteractions(str(f)))] == list(written.values())
    # the same as a Parquet timestamp column of those instants, and as a Parquet string column of that text
    instants = [datetime.datetime.fromtimestamp(v, datetime.timezone.utc) for v in written.values()]
    for column in (pa.array(instants, pa.timestamp("s", tz="UTC")), pa.array(list(written))):
        pq.write_table(pa.table({"user_id": [f"u{n}" for n in range(len(written))],
                                 "item_id": [f"i{n}" for n in range(len(written))], "timestamp": column}),
                       tmp_path / "t.parquet")
        assert [r["timestamp"] for r in read_all(GenericInteractions(str(tmp_path / "t.parquet")))] == list(
            written.values()), column.type
    # refused by line: a date that does not exist, a number among dates, a date among numbers, words, a year
    # outside what a nanosecond clock holds; each named with both ways a column may be written
    for rows, line, value in ((["2020-01-31", "2020-02-30 00:00:00"], 4, "2020-02-30 00:00:00"),
                              (["2020-01-31", "1580472000"], 4, "1580472000"),
                              (["1580472000", "2020-01-31"], 4, "2020-01-31"),
                              (["2020-01-31", "2020-01-31 noon"], 4, "2020-01-31 noon"),
                              (["2020-01-31", "2300-01-01"], 4, "2300-01-01")):
        f.write_text("user_id,item_id,timestamp\nu1,i1," + rows[0] + "\n\nu2,i2," + rows[1] + "\n")
        with pytest.raises(DataError, match=re.escape(
                f"events.csv, line {line}: field 'timestamp' is {value!r}; expected a whole number of seconds or an "
                "ISO 8601 date and time (2020-01-31 12:30:00, with a zone or in UTC), one way in every row")):
            read_all(GenericInteractions(str(f)))
    f.write_text("user_id,item_id,timestamp\nu1,i1,2020-01-31\nu2,i2, \n")  # blank: empty, as in a column of numbers
    with pytest.raises(DataError, match="events.csv, line 3: field 'timestamp' is empty"):
        read_all(GenericInteractions(str(f)))


def test_a_text_timestamp_columns_way_is_its_files_first_value_s_in_every_chunk(tmp_path):
    def write(name, stamps):
        pq.write_table(pa.table({"user_id": [f"u{n}" for n in range(len(stamps))],
                                 "item_id": [f"i{n}" for n in range(len(stamps))], "timestamp": stamps}),
                       tmp_path / name)

    # chunks of 2 rows: the third row, in the second chunk, is written the other way and is refused by row
    for first, other, way in (("2020-01-31", "1580428800", "a date and time"),
                              ("1580428800", "2020-01-31", "a number of seconds")):
        write("t.parquet", [first, first, other, first])
        with pytest.raises(DataError, match=re.escape(
                f"t.parquet, row 3: field 'timestamp' is {other!r}; expected a whole number of seconds or an ISO 8601 "
                f"date and time (2020-01-31 12:30:00, with a zone or in UTC), one way in every row; this file's "
                f"first is {way}")):
            list(GenericInteractions(str(tmp_path / "t.parquet")).interactions(2))
        (tmp_path / "t.parquet").unlink()
    # each file of a directory has its own way: the same instant both ways
    write("a.parquet", ["2020-01-31", "2020-01-31T00:00:00Z"])
    write("b.parquet", ["1580428800", " 1580428800 "])
    rows = pa.Table.from_batches(list(GenericInteractions(str(tmp_path), "all").interactions(1))).to_pylist()
    assert [r["timestamp"] for r in rows] == [1580428800] * 4


def test_parquet_id_columns_of_bytes_decimals_and_dictionaries_read_as_ids_and_other_types_are_refused(tmp_path):
    import decimal

    f = tmp_path / "ids.parquet"

    def ids_read(users, items=("a", "b")):
        pq.write_table(pa.table({"user_id": users, "item_id": list(items)}), f)
        return [r["user_id"] for r in read_all(GenericInteractions(str(f), "all"))]

    d = decimal.Decimal
    # bytes as UTF-8 text, dictionary-encoded or not; decimals as the whole numbers they hold, as an integer column
    # gives them ("1", not "1.00"), 20 digits and all
    assert ids_read(pa.array([b"caf\xc3\xa9", b"x"], pa.large_binary())) == ["café", "x"]
    assert ids_read(pa.array([b"caf\xc3\xa9", b"x"]).dictionary_encode()) == ["café", "x"]
    assert ids_read(pa.array([d("1.00"), d("-3.00")], pa.decimal64(12, 2))) == ["1", "-3"]
    assert ids_read(pa.array([d("98765432109876543210"), d("7")], pa.decimal128(38, 0))) == [
        "98765432109876543210", "7"]
    # refused by row: bytes that are not UTF-8, a decimal with a fraction
    for users, message in ((pa.array([b"x", b"\xff\xfe"], pa.binary()),
                            "row 2: field 'user_id' is the bytes b'\\xff\\xfe', which are not UTF-8 text; expected "
                            "ids written as UTF-8"),
                           (pa.array([b"x", b"\xff\xfe"]).dictionary_encode(),
                            "row 2: field 'user_id' is the bytes b'\\xff\\xfe', which are not UTF-8 text"),
                           (pa.array([d("1.00"), d("1.50")], pa.decimal128(10, 2)),
                            "row 2: field 'user_id' is 1.50 in a decimal128(10, 2) column; expected whole numbers")):
        with pytest.raises(DataError, match=re.escape(f"ids.parquet, {message}")):
            ids_read(users)
    # refused before any row is read, naming the column and its type, where Arrow's cast gave a traceback
    for items in (pa.array([[1, 2], [3]]), pa.array([True, False]), pa.array([{"a": 1}, {"a": 2}]),
                  pa.array([1, 2], pa.timestamp("ms"))):
        pq.write_table(pa.table({"user_id": ["u", "v"], "item_id": items}), f)
        with pytest.raises(DataError, match=re.escape(
                f"ids.parquet: column 'item_id' is of type {pq.read_schema(f).field('item_id').type}; expected text (strings), integers, or floats "
                "or decimals holding whole numbers")):
            GenericInteractions(str(f))


def test_the_first_value_that_does_not_cast_is_found_wherever_it_is():
    for n in (1, 2, 3, 7, 64, 1000):
        for bad in {0, n // 3, n // 2, n - 1}:
            values = [str(i) for i in range(n)]
            values[bad] = "x"
            if bad + 1 < n:
                values[-1] = "y"  # a later failure does not hide the first
            assert first_uncast(pa.array(values), lambda c: c.cast(pa.int64())) == bad, (n, bad)


def test_more_distinct_ids_than_a_pair_key_numbers_are_refused_naming_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(generic, "_MAX_CODE", 3)  # 2^31 - 1 ids in real data: four here
    f = tmp_path / "events.csv"
    f.write_text("user_id,item_id\n" + "".join(f"u{i},i1\n" for i in range(4)))
    with pytest.raises(DataError, match="4 distinct user ids: --repeated-pairs first keeps a pair as one int64 key, "
                                        "which numbers at most 3; expected fewer, or --repeated-pairs all"):
        read_all(GenericInteractions(str(f)))
    assert len(read_all(GenericInteractions(str(f), repeated_pairs="all"))) == 4
