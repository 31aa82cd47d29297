"""RUN/artifacts.json: one manifest tying a run's parts together.

Each artifact (vocabularies, model, candidate embeddings, indexes, exports)
is recorded with its path, a content fingerprint (sha256 over its files) and
the fingerprints of the artifacts it was built from; the manifest also holds
the library versions of the process that wrote it. ``verify_run`` recomputes
every fingerprint and checks every link, so an index built from other
embeddings, or embeddings of another model, is refused by name.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from scaleout import __version__
from scaleout.embed.embedding_set import EmbeddingSet
from scaleout.errors import ArtifactError
from scaleout.fsutil import json_fingerprint, read_manifest, sha256, tree_fingerprint, utc_now, write_json
from scaleout.rundir import RunDir

FORMAT = "scaleout-artifacts/1"
PACKAGES = ("tensorflow", "tf_keras", "tensorflow-recommenders", "scann", "ray", "pyarrow", "numpy")


def versions() -> dict[str, str]:
    found = {"scaleout": __version__}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def vocabularies_fingerprint(data_dir: Path) -> str:
    vocab = sorted((data_dir / "vocab").glob("*.parquet"))
    if not vocab:
        raise ArtifactError(f"{data_dir}: no vocabularies (vocab/*.parquet)")
    return json_fingerprint({p.name: sha256(p) for p in vocab})


def fingerprint(run: RunDir, name: str) -> str:
    """The current content fingerprint of artifact ``name`` of ``run``."""
    if name == "vocabularies":
        return vocabularies_fingerprint(run.data)
    if name == "model":
        return tree_fingerprint(run.model)
    if name in ("query_tower", "candidate_tower"):
        return tree_fingerprint(run.model / name)
    if name == "embeddings":
        return EmbeddingSet(run.embeddings).fingerprint  # opening it checks every part's checksum
    kind, _, sub = name.partition("/")
    if kind in ("index", "export") and sub:
        path = run.index(sub) if kind == "index" else run.export(sub)
        if not path.is_dir():
            raise ArtifactError(f"{path}: missing")
        return tree_fingerprint(path)
    raise ArtifactError(f"unknown artifact {name!r}")


def load(run: RunDir) -> dict:
    if not run.artifacts.is_file():
        return {"format": FORMAT, "artifacts": {}}
    return read_manifest(run.artifacts, FORMAT, f"{run.artifacts}: missing")


def record(run: RunDir, name: str, inputs: tuple[str, ...] = (), fp: str | None = None, **info) -> str:
    """Records artifact ``name`` (fingerprinted now unless ``fp``), linked to the fingerprints ``inputs`` have now.

    The stage recording ``name`` has checked that it was built from its inputs
    as they are now (towers against their data, embeddings against their
    tower, an index against its embeddings), so a link is never recorded to an
    input's old state: an input whose entry is out of date is recorded again,
    and whatever was built on its old state shows as stale in ``verify_run``.
    """
    manifest = load(run)
    entries = manifest["artifacts"]
    for dep in inputs:
        now = fingerprint(run, dep)
        if entries.get(dep, {}).get("fingerprint") != now:
            entries[dep] = {"inputs": {}, **entries.get(dep, {}), "fingerprint": now, "recorded": utc_now()}
    fp = fp or fingerprint(run, name)
    entries[name] = {"fingerprint": fp, "inputs": {dep: entries[dep]["fingerprint"] for dep in inputs},
                     "recorded": utc_now(), **info}
    manifest["versions"] = versions()
    manifest["scaleout_version"] = __version__
    write_json(run.artifacts, manifest)
    return fp


def check_built_from(what: str, recorded: dict[str, str], current: dict[str, str], fix: str) -> None:
    """ArtifactError unless each input ``what`` was built from is the one the run holds now."""
    for dep, fp in recorded.items():
        now = current.get(dep)
        if now is not None and now != fp:
            raise ArtifactError(f"{what} was built from other {dep} ({fp[:12]}) than the run holds now "
                                f"({now[:12]}); {fix}")


# The metrics files that record what they were made from (``made_from``), and the command that writes each again.
METRICS = {"metrics/eval.json": "scaleout evaluate", "metrics/index_eval.json": "scaleout evaluate --indexes",
           "metrics/quality.json": "scaleout quality"}


def verify_run(run: RunDir) -> list[str]:
    """Recomputes every recorded fingerprint and checks every link, then that each metrics file was made from
    the parts the run holds now (a model trained again leaves the old one's metrics behind until they are
    written again: `scaleout pipeline --skip quality`, `scaleout train` alone); returns one line per artifact."""
    manifest = load(run)
    entries = manifest["artifacts"]
    if not entries:
        raise ArtifactError(f"{run.artifacts}: no artifacts recorded; run `scaleout index` first")
    current = {name: fingerprint(run, name) for name in entries}
    for name, entry in entries.items():  # every artifact as recorded, then every link
        if current[name] != entry["fingerprint"]:
            raise ArtifactError(f"{name}: its files changed since it was recorded in {run.artifacts} "
                                f"({entry['fingerprint'][:12]} then, {current[name][:12]} now)")
    for name, entry in entries.items():
        check_built_from(name, entry.get("inputs", {}), current, "rebuild it (`scaleout index`, `scaleout export`)")
    lines = [f"ok  {name:<20} {current[name][:16]}" for name in entries]
    for rel, again in METRICS.items():
        path = run.metrics_file(rel)
        try:
            made_from = json.loads(path.read_text()).get("made_from") if path.is_file() else None
        except (ValueError, AttributeError):
            raise ArtifactError(f"{run.shown(rel)}: not a metrics file (expected a JSON object); write it again "
                                f"(`{again}`)") from None
        if made_from:  # absent: not written, or written before scaleout recorded it
            now = {dep: current[dep] if dep in current else fingerprint(run, dep) for dep in made_from}
            check_built_from(rel, made_from, now, f"write it again (`{again}`)")
            lines.append(f"ok  {rel:<20} made from the {', '.join(made_from)} the run holds")
    return lines
