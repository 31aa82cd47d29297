"""Bad and damaged input, as a user meets it: one table of cases across every source and artifact.

Each case damages a copy of a small finished run (or writes a bad input file), runs one `scaleout`
command in a fresh process and expects: the exit status (1; 2 for what the parser refuses), one line
on stderr naming the file, row or field and what was expected, no traceback, and every file of the
run byte for byte as it was before the command.
"""

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SMALL_RUN, movielens_100k, run_cli
from scaleout.fsutil import tree_fingerprint


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    """Changed in place, its size kept."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def first(run: Path, pattern: str) -> Path:
    return sorted(run.glob(pattern))[0]


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


# (id, file written or damage done to RUN, command after "scaleout", expected exit status, expected text)
# In commands, RUN is the run's copy and IN the input file the case wrote.
CSV = "events.csv"
GENERIC = ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN")
MOVIELENS = ("prepare", "--run", "RUN", "--source", "movielens", "--path", "IN/ml")


def csv(text):
    return lambda run, inp: (inp / CSV).write_text(text)


def movielens(line7):
    """MovieLens 100K with line 7 of u.data replaced."""
    def write(run, inp):
        shutil.copytree(movielens_100k(), inp / "ml")
        data = (inp / "ml" / "u.data").read_text().splitlines()
        data[6] = line7
        (inp / "ml" / "u.data").write_text("\n".join(data) + "\n")
    return write


CASES = [
    # generic CSV and Parquet
    ("csv-rating-word", csv("user_id,item_id,rating\nu1,i1,5\nu2,i2,five\n"), GENERIC, 1,
     "events.csv, line 3: field 'rating' is 'five'; expected a number"),
    ("csv-rating-nan", csv("user_id,item_id,rating\nu1,i1,5\nu2,i2,NaN\n"), GENERIC, 1,
     "events.csv, line 3: field 'rating' is empty or NaN; expected a finite number"),
    ("csv-rating-inf", csv("user_id,item_id,rating\nu1,i1,inf\n"), GENERIC, 1,
     "events.csv, line 2: field 'rating' is inf; expected a finite number"),
    ("csv-rating-empty", csv("user_id,item_id,rating\nu1,i1,\n"), GENERIC, 1,
     "events.csv, line 2: field 'rating' is empty or NaN"),
    ("csv-blank-user", csv("user_id,item_id\nu1,i1\n   ,i2\n"), GENERIC, 1,
     "events.csv, line 3: field 'user_id' is empty; every interaction needs one"),
    ("csv-empty-item", csv("user_id,item_id\nu1,\n"), GENERIC, 1,
     "events.csv, line 2: field 'item_id' is empty"),
    ("csv-timestamp-overflow", csv("user_id,item_id,timestamp\nu1,i1,99999999999999999999\n"), GENERIC, 1,
     "events.csv, line 2: field 'timestamp' is '99999999999999999999'; expected a whole number of seconds"),
    ("csv-timestamp-fraction", csv("user_id,item_id,timestamp\nu1,i1,978300760.0\nu2,i2,978300760.25\n"), GENERIC, 1,
     "events.csv, line 3: field 'timestamp' is '978300760.25'; expected a whole number of seconds"),
    ("csv-timestamp-word", csv("user_id,item_id,timestamp\nu1,i1,yesterday\n"), GENERIC, 1,
     "events.csv, line 2: field 'timestamp' is 'yesterday'; expected a whole number of seconds"),
    ("csv-timestamp-no-such-date", csv("user_id,item_id,timestamp\nu1,i1,2020-02-28 10:00\nu2,i2,2020-02-30 10:00\n"),
     GENERIC, 1, "events.csv, line 3: field 'timestamp' is '2020-02-30 10:00'; expected a whole number of seconds or "
     "an ISO 8601 date and time"),
    ("csv-too-few-fields", csv("user_id,item_id\nu1,i1\nu2\n"), GENERIC, 1,
     "events.csv, line 3: expected 2 fields separated by ',', found 1"),
    ("csv-too-many-fields", csv("user_id,item_id\nu1,i1,x\n"), GENERIC, 1,
     "events.csv, line 2: expected 2 fields separated by ',', found 3"),
    ("csv-missing-column", csv("user,item_id\nu1,i1\n"), GENERIC, 1,
     "events.csv: missing column(s) ['user_id']"),
    ("csv-repeated-header-column", csv("user_id,item_id,user_id\nu1,i1,u2\n"), GENERIC, 1,
     "events.csv, line 1: column 'user_id' appears twice in the header"),
    ("csv-header-not-utf8", lambda run, inp: (inp / CSV).write_bytes(b"user_id,item\xff_id\nu1,i1\n"), GENERIC, 1,
     "events.csv, line 1: the header is not valid UTF-8"),
    ("csv-line-not-utf8", lambda run, inp: (inp / CSV).write_bytes(b"user_id,item_id\nu1,i\xff1\n"), GENERIC, 1,
     "events.csv, line 2: bytes that are not valid utf-8"),
    ("csv-header-only", csv("user_id,item_id\n"), GENERIC, 1,
     "no interactions"),
    ("csv-one-row", csv("user_id,item_id\nu1,i1\n"), GENERIC, 1,
     "the test split is empty (1 interactions"),
    ("generic-no-such-file", None, ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/nowhere.csv"), 1,
     "nowhere.csv: no such file or directory"),
    ("generic-json-file", lambda run, inp: (inp / "e.json").write_text("{}"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.json"), 1,
     "e.json: expected a .csv (or .csv.gz, .csv.bz2, .csv.zst) or .parquet"),
    ("csv-gz-cut-short", lambda run, inp: (inp / "e.csv.gz").write_bytes(
        gzip.compress(b"user_id,item_id\n" + b"".join(b"u%d,i%d\n" % (n, n % 7) for n in range(5000)))[:-40]),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.csv.gz"), 1,
     "e.csv.gz: not readable as gzip-compressed text (Truncated compressed stream); expected a whole gzip file"),
    ("csv-gz-not-gzip", lambda run, inp: (inp / "e.csv.gz").write_text("user_id,item_id\nu1,i1\n"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.csv.gz"), 1,
     "e.csv.gz: not readable as gzip-compressed text"),
    ("csv-gz-rating-word", lambda run, inp: (inp / "e.csv.gz").write_bytes(
        gzip.compress(b"user_id,item_id,rating\nu1,i1,5\n\nu2,i2,five\n")),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.csv.gz"), 1,
     "e.csv.gz, line 4: field 'rating' is 'five'; expected a number"),
    ("generic-empty-directory", lambda run, inp: (inp / "d").mkdir(),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/d"), 1, "d: no .csv or .parquet files"),
    ("generic-columns-differ", lambda run, inp: ((inp / "a.csv").write_text("user_id,item_id\nu,i\n"),
                                                 (inp / "b.csv").write_text("user_id,item_id,rating\nu,i,1\n")),
     GENERIC, 1, "b.csv: columns ['item_id', 'rating', 'user_id'] differ from"),
    ("parquet-not-parquet", lambda run, inp: (inp / "e.parquet").write_bytes(b"PAR1 not really"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.parquet"), 1,
     "e.parquet: not a readable Parquet file"),
    ("parquet-rating-inf", lambda run, inp: pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["i", "j"],
                                                                     "rating": [1.0, float("inf")]}), inp / "e.parquet"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.parquet"), 1,
     "e.parquet, row 2: field 'rating' is inf"),
    ("parquet-float-id-not-whole", lambda run, inp: pq.write_table(pa.table({"user_id": [1.0, 2.5], "item_id": ["i", "j"]}),
                                                                   inp / "e.parquet"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.parquet"), 1,
     "e.parquet, row 2: field 'user_id' is 2.5 in a float64 column"),
    ("parquet-timestamp-word", lambda run, inp: pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["i", "j"],
                                                                         "timestamp": ["5", "2020-01-01"]}),
                                                               inp / "e.parquet"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.parquet"), 1,
     "e.parquet, row 2: field 'timestamp' is '2020-01-01'; expected a whole number of seconds"),
    ("parquet-blank-item", lambda run, inp: pq.write_table(pa.table({"user_id": ["u1"], "item_id": [" "]}),
                                                           inp / "e.parquet"),
     ("prepare", "--run", "RUN", "--source", "generic", "--path", "IN/e.parquet"), 1,
     "e.parquet, row 1: field 'item_id' is empty"),
    # MovieLens files
    ("movielens-rating-word", movielens("196\t242\tgood\t881250949"), MOVIELENS, 1,
     "u.data, line 7: field 'user_rating' is 'good'; expected a number"),
    ("movielens-unknown-movie", movielens("196\t99999\t3\t881250949"), MOVIELENS, 1,
     "u.data, line 7: movie_id '99999' is not in"),
    ("movielens-short-line", movielens("196\t242\t3"), MOVIELENS, 1,
     "u.data, line 7: expected 4 fields separated by '\\t', found 3"),
    ("movielens-missing", None, ("prepare", "--run", "RUN", "--source", "movielens", "--path", "IN/nowhere"), 1,
     "nowhere: no such file or directory"),
    ("run-under-a-file", lambda run, inp: (inp / "file").write_text("not a directory"),
     ("prepare", "--run", "IN/file/run", "--source", "synthetic"), 1, "Not a directory"),
    # settings
    ("test-fraction", None, ("prepare", "--run", "RUN", "--source", "synthetic", "--test-fraction", "1.5"), 1,
     "test_fraction must be in (0, 1), got 1.5"),
    ("k-negative", None, ("recommend", "--run", "RUN", "--user", "1", "-k", "-1", "--exclude-seen"), 2,
     "argument -k: -1 is below 1"),
    ("k-above-catalogue", None, ("recommend", "--run", "RUN", "--user", "1", "-k", "5000"), 1,
     "k=5000 but the index holds 120 candidates"),
    ("export-k-above-catalogue", None, ("export", "--run", "RUN", "-k", "5000"), 1,
     "k=5000 but there are 120 candidates"),
    # the prepared dataset
    ("dataset-manifest-missing", lambda run, inp: (run / "data" / "manifest.json").unlink(),
     ("evaluate", "--run", "RUN"), 1, "data: not a prepared dataset (no manifest.json)"),
    ("dataset-manifest-not-json", lambda run, inp: truncate(run / "data" / "manifest.json"),
     ("evaluate", "--run", "RUN"), 1, "manifest.json: not valid JSON"),
    ("dataset-vocabulary-missing", lambda run, inp: (run / "data" / "vocab" / "user_id.parquet").unlink(),
     ("quality", "--run", "RUN", "--baselines"), 1, "files listed in manifest.json are missing: ['vocab/user_id.parquet']"),
    ("train-shard-truncated", lambda run, inp: truncate(first(run, "data/train/part-*.parquet")),
     ("recommend", "--run", "RUN", "--user", "1", "--exclude-seen"), 1, "part-00000.parquet: "),
    ("train-shard-changed-in-place", lambda run, inp: flip_a_byte(first(run, "data/train/part-*.parquet")),
     ("recommend", "--run", "RUN", "--user", "1", "--exclude-seen"), 1,
     "part-00000.parquet: checksum differs from manifest.json"),
    ("candidates-truncated", lambda run, inp: truncate(run / "data" / "candidates.parquet"),
     ("index", "--run", "RUN", "--indexes", "brute_force"), 1, "candidates.parquet: "),
    # the model
    ("model-json-missing", lambda run, inp: (run / "model" / "model.json").unlink(),
     ("evaluate", "--run", "RUN"), 1, "model: no trained model here (no model.json)"),
    # index without a model: refused before it records the missing towers in artifacts.json (it recorded them as
    # empty, then failed)
    ("model-missing-for-index", lambda run, inp: shutil.rmtree(run / "model"),
     ("index", "--run", "RUN", "--indexes", "brute_force"), 1, "model: no trained model here (no model.json)"),
    ("model-json-not-json", lambda run, inp: truncate(run / "model" / "model.json"),
     ("evaluate", "--run", "RUN"), 1, "model.json: unreadable"),
    ("query-tower-truncated", lambda run, inp: truncate(run / "model" / "query_tower" / "saved_model.pb"),
     ("recommend", "--run", "RUN", "--user", "1"), 1,
     "model: query_tower/saved_model.pb differs from its checksum in model.json: the saved towers are damaged"),
    # a byte of the graph changed: TensorFlow loads it and may answer; the checksum model.json records refuses it
    ("query-tower-graph-changed-in-place", lambda run, inp: flip_a_byte(run / "model" / "query_tower" /
                                                                       "saved_model.pb"),
     ("recommend", "--run", "RUN", "--user", "1"), 1,
     "model: query_tower/saved_model.pb differs from its checksum in model.json"),
    ("candidate-tower-variables-changed-in-place",
     lambda run, inp: flip_a_byte(first(run, "model/candidate_tower/variables/variables.data-*")),
     ("index", "--run", "RUN", "--indexes", "brute_force"), 1,
     "model: candidate_tower/variables/variables.data-00000-of-00001 differs from its checksum in model.json"),
    # a model saved before model.json recorded checksums: TensorFlow's own checksum of the variables, one line
    ("query-tower-variables-changed-unrecorded",
     lambda run, inp: (edit_json(run / "model" / "model.json", lambda m: m.pop("files")),
                       flip_a_byte(first(run, "model/query_tower/variables/variables.data-*"))),
     ("recommend", "--run", "RUN", "--user", "1"), 1,
     "query_tower: cannot load the saved tower ("),
    ("data-prepared-again", lambda run, inp: run_cli("prepare", "--run", run, *SMALL_RUN, "--seed", 5),
     ("recommend", "--run", "RUN", "--user", "1"), 1, "was trained on other data than"),
    # embeddings, indexes, exports
    ("embeddings-json-without-parts", lambda run, inp: edit_json(run / "embeddings" / "embeddings.json",
                                                                 lambda m: m.pop("parts")),
     ("recommend", "--run", "RUN", "--user", "1"), 1, "embeddings.json: no 'parts'"),
    ("embeddings-json-not-json", lambda run, inp: truncate(run / "embeddings" / "embeddings.json"),
     ("recommend", "--run", "RUN", "--user", "1"), 1, "embeddings.json: not valid JSON"),
    ("embedding-part-truncated", lambda run, inp: truncate(first(run, "embeddings/part-*.parquet")),
     ("recommend", "--run", "RUN", "--user", "1"), 1, "part-00000.parquet: missing or truncated"),
    ("embedding-part-changed-in-place", lambda run, inp: flip_a_byte(first(run, "embeddings/part-*.parquet")),
     ("export", "--run", "RUN"), 1, "part-00000.parquet: checksum differs from embeddings.json"),
    ("index-ids-truncated", lambda run, inp: truncate(run / "index" / "brute_force" / "ids.npy"),
     ("recommend", "--run", "RUN", "--user", "1"), 1, "brute_force: corrupt or truncated index"),
    ("index-row-changed-in-place", lambda run, inp: flip_a_byte(run / "index" / "brute_force" / "embeddings.npy"),
     ("recommend", "--run", "RUN", "--user", "1"), 1, "brute_force: corrupt or truncated index: embeddings.npy differs from its checksum in index.json"),
    ("scann-dataset-truncated", lambda run, inp: truncate(run / "index" / "scann" / "scann" / "dataset.npy"),
     ("recommend", "--run", "RUN", "--user", "1", "--index", "scann"), 1, "scann: corrupt or truncated index"),
    ("index-json-not-json", lambda run, inp: truncate(run / "index" / "scann" / "index.json"),
     ("recommend", "--run", "RUN", "--user", "1", "--index", "scann"), 1, "scann: not a saved index (index.json"),
    ("export-saved-model-truncated", lambda run, inp: truncate(run / "export" / "brute_force" / "saved_model" /
                                                               "saved_model.pb"),
     ("recommend", "--saved-model", "RUN/export/brute_force", "--user", "1"), 1,
     "brute_force: saved_model/saved_model.pb differs from its checksum in export.json: the export is damaged"),
    ("export-variables-changed-in-place",
     lambda run, inp: flip_a_byte(first(run, "export/scann/saved_model/variables/variables.data-*")),
     ("recommend", "--saved-model", "RUN/export/scann", "--user", "1"), 1,
     "scann: saved_model/variables/variables.data-00000-of-00001 differs from its checksum in export.json"),
    ("export-variables-changed-unrecorded",
     lambda run, inp: (edit_json(run / "export" / "brute_force" / "export.json", lambda m: m.pop("files")),
                       flip_a_byte(first(run, "export/brute_force/saved_model/variables/variables.data-*"))),
     ("recommend", "--saved-model", "RUN/export/brute_force", "--user", "1"), 1,
     "brute_force: cannot load the SavedModel"),
    ("export-json-missing", lambda run, inp: (run / "export" / "scann" / "export.json").unlink(),
     ("recommend", "--saved-model", "RUN/export/scann", "--user", "1"), 1, "scann: no exported SavedModel here"),
    ("export-out-is-a-users-folder", lambda run, inp: (inp / "mine.txt").write_text("notes"),
     ("export", "--run", "RUN", "--out", "IN"), 1, "not written by scaleout (no export.json; it holds mine.txt)"),
]


@pytest.mark.parametrize("name, damage, command, status, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(small_finished_run, tmp_path, name, damage, command, status,
                                                     message):
    run, inp = tmp_path / "run", tmp_path / "in"
    shutil.copytree(small_finished_run, run)
    inp.mkdir()
    if damage is not None:
        damage(run, inp)
    before = {"run": tree_fingerprint(run), "in": tree_fingerprint(inp)}
    args = [str(a).replace("RUN", str(run)).replace("IN", str(inp)) if isinstance(a, str) else a for a in command]
    result = run_cli(*args)
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"scaleout {args[0]}: error:")
             or line.startswith("scaleout: error:")]  # ours, and argparse's (TensorFlow's own log lines aside)
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and message in lines[0], result.stderr[-3000:]
    assert {"run": tree_fingerprint(run), "in": tree_fingerprint(inp)} == before


def test_the_table_covers_forty_cases_or_more():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
