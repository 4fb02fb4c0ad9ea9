"""The zoo: pretrained weights retina knows by name (`zoo.json`, package data).

One entry per name (`detectron2/retinanet_R_50_FPN_3x`, `torchvision/resnet50`, ...): where the
file comes from, what it is, how a download of it is checked, and the recipe keys the weights
were trained with (`settings`: `model.input_format`, `model.pixel_mean`, ...). A recipe names an
entry as `model.weights: zoo:NAME`; `retina weights get NAME` fetches it (`download.py`).

How a download is checked (`ZooEntry.verification`):

| verification | checked |
| --- | --- |
| `sha256` | the whole file's sha256 against the table's (and its exact size when known) |
| `sha256_prefix` | the start of the file's sha256 against the table's prefix (torchvision's file names carry the first 8 hex digits, which `torch.hub` checks the same way) |
| `none` | nothing but the size bound: no readable source publishes a checksum (detectron2's model zoo) |

Every download is bounded by `ZooEntry.download_limit` (the exact size, else the table's
`max_bytes`, plus a little slack).

This module uses the standard library only (no torch), so reading the table is cheap wherever it
is needed; `zoo_table()` is the one way to the table (tests replace it with their own).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

ZOO_PREFIX = "zoo:"
"""How `model.weights` names a zoo entry: `zoo:torchvision/resnet50`."""

SIZE_SLACK_BYTES = 64 * 1024
"""Bytes a download may exceed the table's size or bound by before it is refused (a server that
sends more is not sending the published file; the hash would fail anyway, but the disk is never
filled by it)."""

SETTING_KEYS = frozenset(
    {
        "model.input_format",
        "model.pixel_mean",
        "model.pixel_std",
        "model.backbone.depth",
        "model.backbone.res2_out_channels",
        "model.backbone.stride_in_1x1",
    }
)
"""The recipe keys an entry's `settings` may set: the input the weights expect and the shape of
the network they fit."""

Verification = Literal["sha256", "sha256_prefix", "none"]
_HEX = re.compile(r"^[0-9a-f]+$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ZooEntry:
    """One named file of pretrained weights (a row of `zoo.json`; the fields are its keys).

    `size_bytes` is the exact size in bytes where a source states it, `max_bytes` an upper bound
    in bytes where it does not; `sha256` the whole file's hex digest, `sha256_prefix` its first
    hex digits; `ap` the published COCO box AP (percent) of a detector; `settings` maps dotted
    recipe keys (`SETTING_KEYS`) to the values the weights were trained with; `provenance` maps a
    field name to where that fact comes from.
    """

    name: str
    source: str
    architecture: str
    kind: Literal["detector", "backbone"]
    depth: int
    trained_on: str
    url: str
    file_name: str
    ap: float | None = None
    size_bytes: int | None = None
    max_bytes: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, str] = field(default_factory=dict)

    @property
    def verification(self) -> Verification:
        """What a download of this entry is checked against (module table)."""
        if self.sha256:
            return "sha256"
        return "sha256_prefix" if self.sha256_prefix else "none"

    @property
    def download_limit(self) -> int:
        """The most bytes a download may have: the exact size (else the bound) plus
        `SIZE_SLACK_BYTES`."""
        known = self.size_bytes if self.size_bytes is not None else self.max_bytes
        if known is None:  # parse_entry refuses such an entry; one built by hand may lack both
            raise ValueError(f"zoo entry {self.name}: needs size_bytes or max_bytes")
        return known + SIZE_SLACK_BYTES

    @property
    def short_hash(self) -> str:
        """The first 8 hex digits that are checked, or `none`."""
        digest = self.sha256 or self.sha256_prefix
        return digest[:8] if digest else "none"

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain JSON data (the keys of `zoo.json`, plus `verification`)."""
        return {
            "name": self.name,
            "source": self.source,
            "architecture": self.architecture,
            "kind": self.kind,
            "depth": self.depth,
            "trained_on": self.trained_on,
            "ap": self.ap,
            "url": self.url,
            "file_name": self.file_name,
            "size_bytes": self.size_bytes,
            "max_bytes": self.max_bytes,
            "sha256": self.sha256,
            "sha256_prefix": self.sha256_prefix,
            "verification": self.verification,
            "settings": dict(self.settings),
            "provenance": dict(self.provenance),
        }


class UnknownZooName(LookupError):
    """`name` is not in the zoo table; `known` lists the names that are, `suggestion` the closest."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        close = difflib.get_close_matches(name, self.known, n=1, cutoff=0.6)
        self.suggestion = close[0] if close else None
        super().__init__(f"unknown zoo name {name!r}")

    def hint(self) -> str:
        """`did you mean 'x'? known names: a, b, c` for the caller's message."""
        mean = f"did you mean {self.suggestion!r}? " if self.suggestion else ""
        return f"{mean}known names: {', '.join(self.known)}"


def zoo_table() -> tuple[ZooEntry, ...]:
    """Every entry of the packaged table (`zoo.json`), in its order. Read once per process."""
    return _packaged_table()


@functools.cache
def _packaged_table() -> tuple[ZooEntry, ...]:
    text = resources.files("retinacli.weights").joinpath("zoo.json").read_text(encoding="utf-8")
    return parse_table(json.loads(text), source="retinacli/weights/zoo.json")


def zoo_names() -> list[str]:
    """The names of `zoo_table()`, in its order."""
    return [entry.name for entry in zoo_table()]


def find_entry(name: str) -> ZooEntry:
    """The entry called `name` (without `zoo:`); UnknownZooName if there is none."""
    for entry in zoo_table():
        if entry.name == name:
            return entry
    raise UnknownZooName(name, zoo_names())


def zoo_name(weights: str | None) -> str | None:
    """NAME of a `model.weights` value `zoo:NAME`, else None (a path, or no weights)."""
    if weights is None or not weights.startswith(ZOO_PREFIX):
        return None
    return weights[len(ZOO_PREFIX) :].strip()


def parse_table(data: Any, *, source: str) -> tuple[ZooEntry, ...]:
    """The entries of a table in `zoo.json`'s layout (`{"format": 1, "entries": [...]}`).

    Raises ValueError naming `source`, the entry and the key for anything malformed: a table is
    data, and a wrong one (a file name with a `/`, a hash that is not hex) must not reach the
    downloader.
    """
    if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("entries"), list):
        raise ValueError(f"{source}: expected {{'format': 1, 'entries': [...]}}")
    entries = tuple(parse_entry(item, source=source) for item in data["entries"])
    names = [entry.name for entry in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{source}: names listed twice: {', '.join(duplicates)}")
    return entries


def parse_entry(item: Any, *, source: str = "zoo table") -> ZooEntry:
    """One `zoo.json` entry as a ZooEntry, every key checked (see `parse_table`)."""
    if not isinstance(item, dict):
        raise ValueError(f"{source}: an entry is a {type(item).__name__}, not a mapping")
    where = f"{source}: entry {item.get('name')!r}"
    known = {f for f in ZooEntry.__dataclass_fields__}
    unknown = sorted(set(item) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    text_keys = ("name", "source", "architecture", "trained_on", "url", "file_name")
    for key in text_keys:
        if not isinstance(item.get(key), str) or not item[key]:
            raise ValueError(f"{where}: {key} must be a non-empty string")
    if not _NAME.match(item["name"]):
        raise ValueError(f"{where}: name must look like source/model (letters, digits, . _ -)")
    if not _FILE_NAME.match(item["file_name"]):
        raise ValueError(f"{where}: file_name must be a plain file name, got {item['file_name']!r}")
    if urlsplit(item["url"]).scheme not in ("https", "http") or not urlsplit(item["url"]).netloc:
        raise ValueError(f"{where}: url must be an http(s) URL, got {item['url']!r}")
    if item.get("kind") not in ("detector", "backbone"):
        raise ValueError(f"{where}: kind must be detector or backbone")
    if item.get("depth") not in (18, 34, 50, 101):
        raise ValueError(f"{where}: depth must be 18, 34, 50 or 101")
    for key in ("size_bytes", "max_bytes"):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{where}: {key} must be a positive number of bytes or null")
    if item.get("size_bytes") is None and item.get("max_bytes") is None:
        raise ValueError(f"{where}: needs size_bytes or max_bytes (a download must be bounded)")
    for key, length in (("sha256", 64), ("sha256_prefix", None)):
        value = item.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not _HEX.match(value) or (length and len(value) != length):
            raise ValueError(f"{where}: {key} must be lower-case hex" + (f" of {length} digits" if length else ""))
    if item.get("sha256") and item.get("sha256_prefix") and not item["sha256"].startswith(item["sha256_prefix"]):
        raise ValueError(f"{where}: sha256 does not start with sha256_prefix")
    ap = item.get("ap")
    if ap is not None and (isinstance(ap, bool) or not isinstance(ap, int | float) or not math.isfinite(ap)):
        raise ValueError(f"{where}: ap must be a number or null")
    settings = item.get("settings", {})
    if not isinstance(settings, dict) or not set(settings) <= SETTING_KEYS:
        raise ValueError(f"{where}: settings may hold only {sorted(SETTING_KEYS)}")
    provenance = item.get("provenance", {})
    if not isinstance(provenance, dict) or not all(isinstance(v, str) for v in provenance.values()):
        raise ValueError(f"{where}: provenance must map keys to text")
    return ZooEntry(
        name=item["name"],
        source=item["source"],
        architecture=item["architecture"],
        kind=item["kind"],
        depth=item["depth"],
        trained_on=item["trained_on"],
        url=item["url"],
        file_name=item["file_name"],
        ap=None if ap is None else float(ap),
        size_bytes=item.get("size_bytes"),
        max_bytes=item.get("max_bytes"),
        sha256=item.get("sha256"),
        sha256_prefix=item.get("sha256_prefix"),
        settings=dict(settings),
        provenance=dict(provenance),
    )
