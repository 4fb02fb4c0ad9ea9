"""`retina weights list | get`: the pretrained weights retina knows by name (`weights/zoo.json`).

`list_weights()` says what each name is and whether its file is in the cache (by its size: the
hash is checked when a file is fetched or used, not when it is listed); `get_weights(names)`
fetches the files, verified (`weights/download.py`). A recipe uses the same names as
`model.weights: zoo:NAME`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retinacli.errors import UsageError
from retinacli.weights import zoo
from retinacli.weights.download import (
    MIRROR_ENV,
    Fetched,
    ProgressCallback,
    cache_dir,
    cached_file,
    download,
    download_url,
    partial_file,
)
from retinacli.weights.zoo import ZOO_PREFIX, UnknownZooName, ZooEntry, find_entry

CacheState = Literal["downloaded", "partial", "missing", "wrong size"]


@dataclass(frozen=True)
class WeightsRow:
    """One zoo entry and its file in the cache: `state` is `downloaded` (present, of the published
    size where that is known), `partial` (an interrupted download of `partial_bytes`, which the
    next `get` continues), `wrong size` (present, but not of the published size: `get` fetches it
    again) or `missing`."""

    entry: ZooEntry
    path: Path
    state: CacheState
    partial_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry.to_dict(), "path": str(self.path), "state": self.state, "partial_bytes": self.partial_bytes}


@dataclass(frozen=True)
class WeightsListing:
    """`retina weights list`: every entry of the table, the cache folder and the mirror in use."""

    cache_dir: Path
    mirror: str | None
    rows: list[WeightsRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache_dir": str(self.cache_dir),
            "mirror": self.mirror,
            "weights": [row.to_dict() for row in self.rows],
        }


def list_weights() -> WeightsListing:
    """Every zoo entry with the state of its file in `weights.download.cache_dir()`."""
    folder = cache_dir()
    rows = [_row(entry, cached_file(entry, folder)) for entry in zoo.zoo_table()]
    return WeightsListing(cache_dir=folder, mirror=os.environ.get(MIRROR_ENV, "").strip() or None, rows=rows)


def _row(entry: ZooEntry, path: Path) -> WeightsRow:
    if path.is_file():
        size = path.stat().st_size
        expected_ok = size == entry.size_bytes if entry.size_bytes is not None else size <= entry.download_limit
        return WeightsRow(entry, path, "downloaded" if expected_ok else "wrong size")
    partial = partial_file(path)
    if partial.is_file():
        return WeightsRow(entry, path, "partial", partial_bytes=partial.stat().st_size)
    return WeightsRow(entry, path, "missing")


def resolve_names(names: Sequence[str]) -> list[ZooEntry]:
    """The entries `names` (with or without `zoo:`) stand for, each once, in order; UsageError
    naming every unknown one and listing the known names."""
    entries: list[ZooEntry] = []
    unknown: list[UnknownZooName] = []
    for raw in names:
        name = raw.strip().removeprefix(ZOO_PREFIX)
        try:
            entry = find_entry(name)
        except UnknownZooName as exc:
            unknown.append(exc)
            continue
        if entry not in entries:
            entries.append(entry)
    if unknown:
        shown = ", ".join(
            repr(exc.name) + (f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else "") for exc in unknown
        )
        raise UsageError(
            f"retina weights get: no pretrained weights named {shown}; known names: "
            f"{', '.join(unknown[0].known)} (`retina weights list`)"
        )
    if not entries:
        raise UsageError("retina weights get: name at least one, e.g. torchvision/resnet50 (`retina weights list`)")
    return entries


def get_weights(
    names: Sequence[str],
    *,
    progress: Callable[[ZooEntry], ProgressCallback | None] | None = None,
) -> list[Fetched]:
    """Fetch each named file into the cache, verified (`weights.download.download`), and return
    what happened to each. Every name is checked before anything is fetched. `progress(entry)`
    gives the byte callback of one download (None: no progress)."""
    entries = resolve_names(names)
    for entry in entries:  # a malformed mirror is refused before any transfer
        download_url(entry)
    return [download(entry, progress=progress(entry) if progress else None) for entry in entries]
