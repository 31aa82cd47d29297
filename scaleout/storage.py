"""Object storage (``s3://bucket/prefix``, ``gs://bucket/prefix``) beside local paths: one filesystem layer.

Every stage that reads or writes a URI goes through here: pyarrow's
filesystems, configured from the standard environment of each store, so an
S3-compatible server works as well as S3:

  s3://  AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (an S3-compatible server, e.g.
         http://127.0.0.1:9000), AWS_REGION or AWS_DEFAULT_REGION, and the
         credentials the AWS SDK finds (instance profile, AWS_ACCESS_KEY_ID /
         AWS_SECRET_ACCESS_KEY, ~/.aws)
  gs://  the credentials the Google SDK finds (GOOGLE_APPLICATION_CREDENTIALS,
         the instance's service account)

A directory written to storage is *committed*: its files go under a new
generation prefix, ``URI/g-<time>-<id>/``, and only then is ``URI/_scaleout.json``
written, naming the generation and every file with its size and sha256. A
reader goes through that record and checks every file against it, so it never
takes a half-uploaded directory; an upload that fails leaves the record, and so
the previous output, as it was. Superseded generations are removed after the
record is replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pyarrow.fs as pafs

from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.fsutil import checksums, utc_now
from scaleout.scratch import scratch

log = logging.getLogger(__name__)
SCHEMES = ("s3", "gs")
COMMIT = "_scaleout.json"
COMMIT_FORMAT = "scaleout-committed/1"
GENERATION_PREFIX = "g-"
# The store's settings that every process of a job needs (no secrets: a node finds its own credentials).
FORWARDED_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_EC2_METADATA_DISABLED")


class StorageError(ScaleoutError):
    """The store cannot be reached, the bucket is missing, or access is refused."""


def is_remote(path: str | Path | None) -> bool:
    return path is not None and isinstance(path, str) and path.split("://", 1)[0] in SCHEMES and "://" in path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def forwarded_env() -> dict[str, str]:
    """The store settings of this process's environment, for the runtime environment of Ray workers."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path within it) for a URI or a local path."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    scheme, rest = uri.split("://", 1)
    path = rest.rstrip("/")
    if not path or path.startswith("/"):
        raise StorageError(f"{uri}: expected {scheme}://BUCKET/PREFIX")
    if scheme == "gs":
        return pafs.GcsFileSystem(retry_time_limit=30), path
    return _s3(), path


def _s3() -> pafs.S3FileSystem:
    kwargs = {"connect_timeout": 5, "request_timeout": 60,
              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _bucket(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def describe_error(uri: str, exc: Exception) -> str:
    """One line for a failed storage call: what was tried and the store's own reason, without the SDK's detail."""
    text = " ".join(str(exc).split())
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low or "the specified bucket" in low:
        why = f"the bucket {_bucket(uri)!r} does not exist"
    elif any(w in low for w in ("accessdenied", "access denied", "access_denied", "forbidden", "403")):
        why = f"access to {uri} is denied (check the credentials or the instance profile's policy)"
    elif "credentials" in low or "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low:
        why = "no valid credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or use an instance profile)"
    elif "curl" in low or "connect" in low or "resolve" in low or "timed out" in low or "timeout" in low:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        why = (f"the store cannot be reached (endpoint {endpoint})" if endpoint else
               "the store cannot be reached (AWS's own endpoint: AWS_ENDPOINT_URL_S3 is not set)")
    else:
        why = text[:300]
    return f"{uri}: {why}"


def preflight(uri: str) -> None:
    """StorageError (one line) unless the bucket of ``uri`` exists and an object can be written and removed there.

    Runs before any worker starts, so an unreachable store, a missing bucket or
    refused access ends the command at once instead of inside a worker.
    """
    if not is_remote(uri):
        return
    fs, path = filesystem(uri)
    bucket = path.split("/", 1)[0]
    marker = f"{path}/.scaleout-write-check-{uuid.uuid4().hex[:8]}"
    try:
        info = fs.get_file_info(bucket)
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{uri}: the bucket {bucket!r} does not exist (create it first)")
        with fs.open_output_stream(marker) as f:
            f.write(b"ok")
        fs.delete_file(marker)
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(describe_error(uri, exc)) from None


# -- single objects ---------------------------------------------------------------


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """One object, whole or not at all (an object store's PUT is atomic; a local file goes through a rename)."""
    if not is_remote(uri):
        tmp = Path(f"{uri}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, uri)
        return
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def list_files(uri: str) -> dict[str, int]:
    """{relative path: size} of every object under ``uri`` ({} when there is none)."""
    fs, path = filesystem(uri)
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {i.path[len(path) + 1:]: i.size for i in found if i.type == pafs.FileType.File}


def delete_tree(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def download_file(uri: str, local: Path, expected_sha256: str | None = None) -> None:
    """Copies one object to ``local``; ArtifactError when its checksum is not ``expected_sha256``."""
    fs, path = filesystem(uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        while chunk := src.read(1 << 22):
            h.update(chunk)
            dst.write(chunk)
    if expected_sha256 is not None and h.hexdigest() != expected_sha256:
        raise ArtifactError(f"{uri}: checksum differs from the {COMMIT} that lists it; the object changed after "
                            "it was written")


def upload_file(local: Path, uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_remote(uri):  # a store has no directories to make; a local path's parent may not exist yet
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(local, "rb") as src, fs.open_output_stream(path) as dst:
        shutil.copyfileobj(src, dst, 1 << 22)


# -- committed directories ----------------------------------------------------------


def read_commit(uri: str) -> dict | None:
    """The commit record of the directory at ``uri``, or None when nothing was committed there."""
    try:
        data = read_bytes(join(uri, COMMIT))
    except FileNotFoundError:
        return None
    try:
        record = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{join(uri, COMMIT)}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != COMMIT_FORMAT:
        raise ArtifactError(f"{join(uri, COMMIT)}: format {record.get('format') if isinstance(record, dict) else '?'}"
                            f"; expected {COMMIT_FORMAT!r}")
    return record


def generation_uri(uri: str, record: dict) -> str:
    return join(uri, record["generation"])


def check_committable(uri: str, force: bool = False) -> dict | None:
    """The current record at ``uri``; ArtifactError when objects are there that scaleout did not commit."""
    record = read_commit(uri)
    if record is None and not force:
        others = sorted(list_files(uri))
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise ArtifactError(f"{uri}: not written by scaleout (no {COMMIT}; it holds {shown}); refusing to "
                                "replace it: choose another path, or pass --force")
    return record


def commit_dir(local: Path, uri: str, command: str, force: bool = False,
               in_store: dict[str, tuple[str, str]] | None = None) -> dict:
    """Uploads the directory ``local`` to ``uri`` as a new generation, then writes the record; returns it.

    Until the record is written the previous generation stays the one readers
    see; after it, the previous generation and any left by failed uploads are
    removed. ``in_store``: {name: (URI, sha256)} of files already in the same
    store (the parts the Ray embedding job uploaded): copied there by the store
    itself when the checksum matches, instead of uploaded again.
    """
    check_committable(uri, force)
    generation = f"{GENERATION_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    files = checksums(local)
    started = time.monotonic()
    fs, _ = filesystem(uri)
    copied = 0
    for name, entry in files.items():
        source = (in_store or {}).get(name)
        if source is not None and source[1] == entry["sha256"]:
            fs.copy_file(filesystem(source[0])[1], filesystem(join(uri, generation, name))[1])  # server side
            copied += 1
        else:
            upload_file(local / name, join(uri, generation, name))
    record = {"format": COMMIT_FORMAT, "generation": generation, "files": files, "written": utc_now(),
              "command": command}
    write_bytes(join(uri, COMMIT), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    path = filesystem(uri)[1]
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith(GENERATION_PREFIX) \
                and info.base_name != generation:
            fs.delete_dir(info.path)
    size = sum(e["bytes"] for e in files.values())
    log.info("uploaded %s (%d files, %.1f MB%s) in %.1f s", uri, len(files), size / 1e6,
             f"; {copied} copied within the store" if copied else "", time.monotonic() - started)
    return record


def fetch_dir(uri: str, local: Path, record: dict | None = None, only=None) -> dict:
    """Downloads the committed directory at ``uri`` into ``local`` (which must not hold other files), checking
    every file against the record; ``only(name)`` chooses which files. ArtifactError when nothing is committed."""
    record = record or read_commit(uri)
    if record is None:
        raise ArtifactError(f"{uri}: nothing committed here (no {COMMIT})")
    base = generation_uri(uri, record)
    started = time.monotonic()
    names = [n for n in record["files"] if only is None or only(n)]
    for name in names:
        download_file(join(base, name), local / name, record["files"][name]["sha256"])
    local.mkdir(parents=True, exist_ok=True)
    log.debug("downloaded %s (%d files) in %.1f s", uri, len(names), time.monotonic() - started)
    return record


def same_content(local: Path, record: dict | None) -> bool:
    return record is not None and local.is_dir() and checksums(local) == record["files"]


# -- inputs and outputs given as URIs ------------------------------------------------


def local_input(uri: str, workdir: Path) -> Path:
    """A local copy of an input that may be a URI: a committed directory, a single object, or a prefix of objects."""
    if not is_remote(uri):
        return Path(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "input"
    target = Path(tempfile.mkdtemp(prefix="in-", dir=workdir)) / name
    try:
        record = read_commit(uri)
        if record is not None:
            fetch_dir(uri, target, record)
            return target
        fs, path = filesystem(uri)
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.File:
            download_file(uri, target)
            return target
        files = list_files(uri)
        if not files:
            raise StorageError(f"{uri}: no such object or prefix")
        for rel in files:
            download_file(join(uri, rel), target / rel)
        return target
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(describe_error(uri, exc)) from None


@contextlib.contextmanager
def staged_output(uri: str, command: str, force: bool = False) -> Iterator[Path]:
    """A local path (not yet created) for a directory to be written, committed to ``uri`` when the block succeeds.

    What ``uri`` holds is checked first (scaleout's, or ``force``), so a
    refusal costs nothing; on an exception nothing is uploaded.
    """
    preflight(uri)
    check_committable(uri, force)
    with scratch("out") as tmp:
        local = tmp / "out"
        yield local
        commit_dir(local, uri, command, force)


@contextlib.contextmanager
def local_inputs(workdir: Path | None = None) -> Iterator:
    """``fetch(path_or_uri) -> local Path``: copies of remote inputs in a temporary directory, removed after."""
    with scratch("in", workdir) as tmp:
        yield lambda uri: local_input(uri, tmp) if uri is not None else None
