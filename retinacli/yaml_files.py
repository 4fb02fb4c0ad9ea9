"""YAML from strangers, read with bounded work: the one loader of recipes, `_base_` files,
detectron2 configs and a YOLO dataset's data.yaml.

PyYAML's `SafeLoader` builds no Python objects beyond plain data, but its work is unbounded:
nine lines of nested aliases ("billion laughs") expand to 9**9 values, deep nesting exhausts its
recursion, and a FIFO or device given as the file blocks or never ends. `BoundedLoader` bounds
the values a document expands to and its nesting while the document is composed (before
anything is built), and `read_regular_file` reads only a regular file, up to a size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_YAML_NODES = 100_000
"""The most values (mappings, lists and scalars, each alias counted as the whole value it
repeats) one YAML document may expand to. A complete recipe has about 200; nine lines of nested
aliases ("billion laughs") would otherwise expand to 9**9 values and hang every consumer."""

MAX_YAML_DEPTH = 64
"""The deepest nesting of mappings and lists in one YAML document (a recipe uses 5 levels);
deeper documents would exhaust the YAML reader's recursion."""


class NotARegularFile(ValueError):
    """The path is a folder, FIFO, device or socket (`kind` says which), so it was not read."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path}: is {kind}, not a regular file")
        self.kind = kind


class FileTooLarge(ValueError):
    """The file is larger than the limit it was read with (`limit`, bytes)."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(f"{path}: larger than {limit} bytes")
        self.limit = limit


def _check_kind(path: Path, info: os.stat_result, max_bytes: int) -> None:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        if info.st_size > max_bytes:
            raise FileTooLarge(path, max_bytes)
        return
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    raise NotARegularFile(path, next((name for test, name in kinds if test(mode)), "not a regular file"))


def read_regular_file(path: str | os.PathLike[str], *, max_bytes: int) -> bytes:
    """The bytes of `path`, read only when it is a regular file of at most `max_bytes`: a FIFO
    would block forever, a device could be endless or act on being opened, and a folder is no
    file. The kind is checked before the file is opened, and again on the opened file
    (`O_NONBLOCK`, so a FIFO swapped in between cannot block either).

    Raises NotARegularFile, FileTooLarge (both ValueError) or OSError (missing, unreadable)."""
    target = Path(path)
    _check_kind(target, os.stat(target), max_bytes)
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as handle:
        _check_kind(target, os.fstat(handle.fileno()), max_bytes)
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(target, max_bytes)
    return data


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML document over `BoundedLoader`'s bounds (values, nesting, recursive aliases)."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounded work: the document may expand to at most
    `MAX_YAML_NODES` values, each alias counted as the whole value it repeats (so nested aliases
    cannot multiply into billions), nested at most `MAX_YAML_DEPTH` deep, and no alias may appear
    inside the value it names (a recursive structure). Each bound raises `YamlLimitError` while
    the document is composed, before anything is constructed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded: dict[int, int] = {}  # id(node) -> values it expands to (itself included)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:
                raise YamlLimitError(
                    None, None, f"the alias *{event.anchor} is inside the value it names, a "
                    "recursive structure no recipe needs; write the value out", event.start_mark
                )
            return node
        start = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YamlLimitError(
                None, None, f"the values are nested more than {MAX_YAML_DEPTH} levels deep (a "
                "recipe needs 5); check the file", start
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        size = 1 + sum(self._expanded[id(child)] for child in children)
        if size > MAX_YAML_NODES:
            raise YamlLimitError(
                None, None, f"the document expands to more than {MAX_YAML_NODES} values (aliases "
                "such as *name count as the whole value they repeat; a recipe holds about 200); "
                "write the values out or check the file", start
            )
        self._expanded[id(node)] = size
        return node

    def compose_document(self) -> yaml.Node:
        try:
            return super().compose_document()
        finally:
            self._expanded.clear()


def load_bounded(text: str) -> Any:
    """`yaml.safe_load(text)` with `BoundedLoader`'s bounds (YamlLimitError, a yaml.YAMLError)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


MAX_SMALL_YAML_BYTES = 1 << 20
"""The largest YAML file of settings (a search space) read: 1 MiB."""


class UnreadableYaml(ValueError):
    """A YAML file of settings that cannot be read; the message names the file and why."""


def read_yaml_mapping(path: str | os.PathLike[str], *, what: str, max_bytes: int = MAX_SMALL_YAML_BYTES) -> dict[Any, Any]:
    """A YAML file holding one mapping (an empty file is {}), read with `read_regular_file` and
    `load_bounded`. Raises UnreadableYaml naming the file and what was wrong."""
    target = Path(path)
    try:
        text = read_regular_file(target, max_bytes=max_bytes).decode("utf-8")
        data = load_bounded(text)
    except FileNotFoundError:
        raise UnreadableYaml(f"{target}: no such {what} file") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not regular, too large, not UTF-8
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise UnreadableYaml(f"{target}: cannot read the {what}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UnreadableYaml(f"{target}: the {what} must be a mapping of keys, not {type(data).__name__}")
    return data
