"""An index loaded back from its directory, whichever kind its index.json names."""

from __future__ import annotations

from pathlib import Path

from scaleout.errors import ArtifactError
from scaleout.index.base import Index, read_meta
from scaleout.index.brute_force import BruteForce
from scaleout.index.scann import Scann
from scaleout.names import BRUTE_FORCE, SCANN

KINDS: dict[str, type[Index]] = {BRUTE_FORCE: BruteForce, SCANN: Scann}


def load_index(directory: str | Path) -> Index:
    """Loads the index saved in ``directory``, whichever kind its index.json names."""
    directory = Path(directory)
    kind = read_meta(directory, None).get("kind")
    if kind not in KINDS:
        raise ArtifactError(f"{directory}: unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")
    return KINDS[kind].load(directory)
