"""Reading recipes: safe YAML, `_base_` chains, `--set` overrides, and errors a person can act on.

YAML is only ever read with `yaml.safe_load`-equivalent loaders. A Python tag such as
`!!python/object/apply:eval` is refused before anything in the file is constructed, with the
file, line and (for anchor sizes) the equivalent safe form.

Recipes come from strangers too, so reading one is bounded work (docs/security.md): only a
regular file is opened (a FIFO, device, socket or folder is refused before any read), at most
`MAX_RECIPE_BYTES` of it; its YAML may expand (aliases included) to at most `MAX_YAML_NODES`
values nested at most `MAX_YAML_DEPTH` deep; a `_base_` chain reads at most `MAX_BASE_FILES`
files. Each limit is a RecipeError naming the file.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from retinacli.errors import RecipeError
from retinacli.recipe.anchor_sizes import format_compact
from retinacli.recipe.safe_expr import UnsafeExpressionError, evaluate
from retinacli.recipe.schema import Recipe
from retinacli.recipe.zoo_settings import zoo_settings
from retinacli.yaml_files import (
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    BoundedLoader,
    FileTooLarge,
    NotARegularFile,
    YamlLimitError,
    read_regular_file,
)

BASE_KEY = "_base_"
_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"

MAX_RECIPE_BYTES = 1 << 20
"""The largest recipe file read (1 MiB). recipes/*.yaml are under 4 KiB and detectron2's
model-zoo configs under 2 KiB, so the limit is far above any real recipe, while PyYAML's
pure-Python reader (whose work grows with the text) never gets a file that would stall a
command."""

MAX_BASE_FILES = 32
"""The most files one `_base_` chain reads, the recipe included (detectron2's model zoo chains
two or three); a chain that names the same base twice counts it twice."""


@dataclass
class _Origins:
    """Where each key path of the merged recipe was last set: 'file line N' or '--set'."""

    by_path: dict[tuple[str, ...], str] = field(default_factory=dict)

    def find(self, path: Sequence[str]) -> str | None:
        path = tuple(path)
        while path:
            if path in self.by_path:
                return self.by_path[path]
            path = path[:-1]
        return None


# ----------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Override:
    """One change to a recipe key: `key_path` set to `value` (already typed by the schema).

    `origin` names where it came from in messages: `--set solver.base_lr=0.02`, or a command's
    flag that stands for a key (`--sizes 32..512`).
    """

    key_path: tuple[str, ...]
    value: Any
    origin: str


def load_recipe(path: str | Path | None, overrides: Sequence[str | Override] = ()) -> Recipe:
    """Read, merge (`_base_`), override (`--set key=value` or `Override`s) and validate a recipe.

    `path` None starts from the defaults alone. Raises RecipeError with a message naming the
    file, line, key path and fix for every problem found.
    """
    origins = _Origins()
    raw: dict[str, Any] = {}
    source = "the defaults"
    if path is not None:
        raw = read_with_bases(
            Path(path), base_key=BASE_KEY, read_file=read_yaml_file, origins=origins
        )
        source = str(path)
    _apply_overrides(raw, overrides, origins)
    return validate_recipe(raw, source=source, origins=origins)


def recipe_from_dict(
    raw: Mapping[str, Any], overrides: Sequence[str | Override] = (), *, source: str = "recipe"
) -> Recipe:
    """Validate a recipe held as plain data (e.g. inside a checkpoint), overrides applied first.
    Data over the YAML bounds (`check_plain_size`) is refused before it is copied."""
    check_plain_size(raw, source=source)
    merged = copy.deepcopy(dict(raw))
    origins = _Origins()
    _apply_overrides(merged, overrides, origins)
    return validate_recipe(merged, source=source, origins=origins)


def upgrade_stored_recipe(raw: Mapping[str, Any], *, format_version: int) -> dict[str, Any]:
    """A recipe stored in a file of an older `format_version`, with its keys as they are named now.

    Version 1 spelt `solver.clip_gradients.clip_type` and `clip_value` as `type` and `value`.
    """
    data = copy.deepcopy(dict(raw))
    if format_version < 2:
        clip = data.get("solver", {}).get("clip_gradients")
        if isinstance(clip, dict):
            for old, new in (("type", "clip_type"), ("value", "clip_value")):
                if old in clip:
                    clip[new] = clip.pop(old)
    return data


def validate_recipe(
    raw: Mapping[str, Any], *, source: str = "recipe", origins: _Origins | None = None
) -> Recipe:
    """Validate an already-merged mapping; RecipeError lists every problem found.

    A `model.weights: zoo:NAME` fills in the keys that belong to those weights and refuses a
    recipe that sets them otherwise (`zoo_settings`)."""
    origins = origins or _Origins()
    zoo = zoo_settings(raw, source=source, where=origins.find)
    try:
        recipe = Recipe.model_validate(zoo.filled(raw) if zoo else raw)
    except ValidationError as exc:
        raise RecipeError(_format_validation_error(exc, source, origins)) from None
    if zoo:
        zoo.check(recipe)
    return recipe


def parse_override(text: str) -> Override:
    """Split `dotted.key=value` and type the value by the schema field it names."""
    if "=" not in text:
        raise RecipeError(
            f"--set {text}: expected KEY=VALUE such as --set solver.base_lr=0.02"
        )
    key, _, value_text = text.partition("=")
    return key_override(key, value_text, origin=f"--set {text}")


def key_override(key: str, value_text: str, *, origin: str) -> Override:
    """The override of dotted `key` by `value_text`, typed by the schema field the key names.

    `origin` names the setting in errors (e.g. `--set k=v` or a flag such as `--offset 0.5`).
    """
    key_path = key.strip().split(".")
    if not key.strip() or any(not part for part in key_path):
        raise RecipeError(f"{origin}: {key!r} is not a dotted key such as model.head.num_classes")
    annotation = _annotation_at(Recipe, key_path, origin)
    return Override(tuple(key_path), _parse_value(value_text.strip(), annotation, origin), origin)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain JSON types (input-only keys such as anchors.scales left out)."""
    data = recipe.model_dump(mode="json")
    data["model"]["anchors"].pop("scales", None)
    return data


def flat_keys(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recipe dict as {dotted key: leaf value} (an empty mapping is a leaf)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_recipe(recipe: Recipe | Mapping[str, Any]) -> str:
    """YAML text that `load_recipe` reads back to an equal recipe (short lists in flow style)."""
    data = recipe_to_dict(recipe) if isinstance(recipe, Recipe) else dict(recipe)
    return yaml.dump(data, Dumper=_FlowListDumper, sort_keys=False, allow_unicode=True, width=4096)


def diff_from_defaults(recipe: Recipe) -> dict[str, Any]:
    """The nested subset of the resolved recipe whose values differ from the defaults."""
    return _diff(recipe_to_dict(recipe), recipe_to_dict(Recipe()))


def read_yaml_file(path: Path, *, loader: type[RecipeLoader] | None = None) -> Any:
    """Load one YAML file with `loader` (`RecipeLoader` or a subclass; default `RecipeLoader`);
    RecipeError for a missing or unreadable file, one that is not a regular file or is over
    `MAX_RECIPE_BYTES`, YAML over the loader's bounds, or bad syntax, naming the file, line and
    column. With the plain `RecipeLoader`, any Python tag is refused first with the line and the
    safe form (`_refuse_python_tags`); a subclass that adds constructors of its own (detectron2's
    `apply:eval`) is trusted to refuse the rest."""
    loader = loader or RecipeLoader
    if not (isinstance(loader, type) and issubclass(loader, RecipeLoader)):
        raise TypeError(f"loader must be RecipeLoader or a subclass, got {loader!r}")
    text = read_recipe_text(path)
    reader: RecipeLoader | None = None
    try:
        reader = loader(text)  # the reader refuses control characters here already
        root = reader.get_single_node()
        if root is None:
            return None
        if loader is RecipeLoader:
            _refuse_python_tags(root, path)
        return reader.construct_document(root)
    except YamlLimitError as exc:
        raise RecipeError(f"{path}{_mark_text(exc)}: {_problem(exc)}") from None
    except yaml.constructor.ConstructorError as exc:  # a tag the loader refuses
        raise RecipeError(f"{path}{_mark_text(exc)}: {_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}{_mark_text(exc)}: not valid YAML ({_problem(exc)})") from None
    finally:
        if reader is not None:
            reader.dispose()


def read_recipe_text(path: Path) -> str:
    """The text of the recipe (or `_base_` file, or detectron2 config) at `path`, read only when
    it is a regular file of at most `MAX_RECIPE_BYTES`: a FIFO would block the command forever, a
    device could be endless or act on being opened, and a folder is no recipe. The kind is
    checked before the file is opened, and again on the opened file (`O_NONBLOCK`, so a FIFO
    swapped in between cannot block either). RecipeError naming the file otherwise."""
    try:
        data = read_regular_file(path, max_bytes=MAX_RECIPE_BYTES)
    except FileNotFoundError:
        raise RecipeError(f"{path}: file not found; check the path") from None
    except NotARegularFile as exc:
        raise RecipeError(
            f"{path}: is {exc.kind}, not a regular file, so it was not read; pass a recipe YAML file"
        ) from None
    except FileTooLarge:
        raise RecipeError(_too_large(path)) from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot be read ({exc.strerror or exc}); check the file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: cannot be read ({exc}); save the recipe as UTF-8 text") from None


def _too_large(path: Path) -> str:
    return (
        f"{path}: the file is larger than {MAX_RECIPE_BYTES // (1 << 20)} MiB, the most a recipe "
        "may hold (real recipes take a few KiB); check that this is the recipe you meant"
    )


class RecipeLoader(BoundedLoader):
    """The loader of recipes, `_base_` files and detectron2 configs: PyYAML's safe loader with
    bounded work (`yaml_files.BoundedLoader`); subclasses add constructors of their own
    (detectron2's `apply:eval`)."""


def check_plain_size(data: Any, *, source: str) -> None:
    """Refuse plain data (dicts, lists, scalars; e.g. a recipe stored in a model file, where
    shared references can repeat a value as YAML aliases do) that expands to more than
    `MAX_YAML_NODES` values or nests more than `MAX_YAML_DEPTH` levels (a reference cycle
    included): RecipeError naming `source`."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int) -> int:
        if not isinstance(value, dict | list | tuple):
            return 1
        if depth > MAX_YAML_DEPTH:
            raise RecipeError(
                f"{source}: the values are nested more than {MAX_YAML_DEPTH} levels deep (or "
                "refer to themselves); the recipe is damaged or was not written by retinacli"
            )
        known = sizes.get(id(value))
        if known is not None:
            return known
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
        total = 1
        for item in items:
            total += size(item, depth + 1)
            if total > MAX_YAML_NODES:
                raise RecipeError(
                    f"{source}: the recipe expands to more than {MAX_YAML_NODES} values (a recipe "
                    "holds about 200); it is damaged or was not written by retinacli"
                )
        sizes[id(value)] = total
        return total

    size(data, 0)


def read_with_bases(
    path: Path,
    *,
    base_key: str,
    read_file: Callable[[Path], Any],
    origins: _Origins | None = None,
) -> dict[str, Any]:
    """One YAML mapping from `path` and the chain of files its `base_key` names (recipes'
    `_base_`, detectron2's `_BASE_`): a path or a list of paths, relative to the file that names
    them; later files override earlier ones key by key (`deep_merge`).

    `read_file` loads one file. An empty file, a file that is not a mapping, a missing base, a
    cycle and a chain of more than `MAX_BASE_FILES` files are RecipeErrors naming the file.
    `origins`, when given, records where each key was set.
    """
    return _read_chain(path, base_key=base_key, read_file=read_file, origins=origins, stack=(), reads=[0])


def _read_chain(
    path: Path,
    *,
    base_key: str,
    read_file: Callable[[Path], Any],
    origins: _Origins | None,
    stack: tuple[Path, ...],
    reads: list[int],
) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise RecipeError(f"{path}: {base_key} chain has a cycle ({chain}); remove one of the links")
    reads[0] += 1
    if reads[0] > MAX_BASE_FILES:
        raise RecipeError(
            f"{path}: the {base_key} chain reads more than {MAX_BASE_FILES} files (this one is "
            f"{len(stack)} links down from {stack[0] if stack else path}); detectron2's deepest "
            f"chains have 3. Merge some of the files into one"
        )
    data = read_file(path)
    if data is None:
        raise RecipeError(
            f"{path}: the file is empty; write the keys it sets (model:, data:, solver: ...), "
            "or {} to take every default"
        )
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: the file must be a mapping of keys (model:, data:, solver: ...), "
            f"got a {type(data).__name__}"
        )
    bases = data.pop(base_key, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise RecipeError(f"{path}: {base_key} must be a path or a list of paths, got {_short(bases)}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        if not base_path.exists():
            raise RecipeError(
                f"{path}: {base_key} {base!r} not found (looked for {base_path}); paths are "
                "relative to the file that names them"
            )
        parent = _read_chain(
            base_path, base_key=base_key, read_file=read_file, origins=origins,
            stack=(*stack, resolved), reads=reads,
        )
        merged = deep_merge(merged, parent)
    if origins is not None:
        lines = _key_lines(path)
        for key_path in _leaf_paths(data):
            line = lines.get(key_path)
            origins.by_path[key_path] = f"{path}" + (f" line {line}" if line else "")
    return deep_merge(merged, data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; any other value (lists included) replaces the base's. A
    mapping with a `kind` key (a dataset section) replaces the base's as a whole."""
    result = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict) and "kind" not in value:
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# ----------------------------------------------------------------------------- helpers


def _apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str | Override], origins: _Origins
) -> None:
    for item in overrides:
        override = parse_override(item) if isinstance(item, str) else item
        _set_path(raw, list(override.key_path), override.value, override.origin)
        origins.by_path[override.key_path] = override.origin


def _leaf_paths(data: Any, prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _leaf_paths(value, (*prefix, str(key)))
    elif prefix:
        yield prefix


def _key_lines(path: Path) -> dict[tuple[str, ...], int]:
    """1-based line of each key path in a YAML file (from the node tree; nothing constructed).
    The file was read once already; this second read has the same bounds."""
    try:
        root = yaml.compose(read_recipe_text(path), Loader=RecipeLoader)
    except (RecipeError, yaml.YAMLError):
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key_path = (*prefix, str(key_node.value))
                lines[key_path] = key_node.start_mark.line + 1
                walk(value_node, key_path)

    if root is not None:
        walk(root, ())
    return lines


# ----------------------------------------------------------------------------- python tags


def _refuse_python_tags(root: yaml.Node, path: Path) -> None:
    """Refuse any `!!python/...` tag in the composed document, naming its line; suggest the safe
    anchor-size form. (The walk is bounded: `RecipeLoader` composed at most MAX_YAML_NODES.)"""
    found: list[str] = []

    def walk(node: yaml.Node, key_path: tuple[str, ...]) -> None:
        if node.tag.startswith(_PYTHON_TAG_PREFIX):
            found.append(_python_tag_message(node, key_path))
            return
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(value_node, (*key_path, str(key_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, key_path)

    walk(root, ())
    if found:
        raise RecipeError(
            f"{path}: refused to load: recipes are read with safe YAML loading and never run "
            "code.\n" + "\n".join(found)
        )


def _python_tag_message(node: yaml.Node, key_path: tuple[str, ...]) -> str:
    tag = "!!" + node.tag.removeprefix("tag:yaml.org,2002:")
    where = ".".join(key_path) or "(top level)"
    message = f"  line {node.start_mark.line + 1}, {where}: the tag {tag} would execute Python."
    if node.tag.endswith("apply:eval") and key_path and key_path[-1].lower() == "sizes":
        expression = _eval_tag_expression(node)
        message += "\n" + _safe_sizes_suggestion(expression)
    else:
        message += " Write the value as plain YAML (numbers, strings, lists)."
    return message


def _eval_tag_expression(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.SequenceNode) and len(node.value) == 1:
        item = node.value[0]
        if isinstance(item, yaml.ScalarNode):
            return str(item.value)
    return None


def _safe_sizes_suggestion(expression: str | None) -> str:
    if expression is None:
        return "  Write the anchor sizes as plain lists, e.g. sizes: '32..512' with scales: 3."
    try:
        value = evaluate(expression)
    except UnsafeExpressionError as exc:
        return f"  Its expression cannot be computed safely ({exc}); write the sizes as plain lists."
    compact = format_compact(value) if isinstance(value, list) else None
    if compact is not None:
        sizes, scales = compact
        return (
            f"  The expression {expression.strip()!r} equals this safe form:\n"
            f"    anchors:\n      sizes: \"{sizes}\"\n      scales: {scales}"
        )
    return f"  The expression equals this safe form:\n    anchors:\n      sizes: {value}"


# ----------------------------------------------------------------------------- --set


def _annotation_at(model: type[BaseModel], key_path: list[str], origin: str) -> Any:
    annotation: Any = model
    walked: list[str] = []
    for part in key_path:
        models = _models_in(annotation)
        if not models:
            raise RecipeError(
                f"{origin}: {'.'.join(walked)} is a value, not a section; "
                f"set it directly, e.g. --set {'.'.join(walked)}=..."
            )
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if part not in fields:
            raise RecipeError(
                f"{origin}: unknown key {'.'.join([*walked, part])!r}"
                + _did_you_mean(part, fields)
            )
        annotation = fields[part].annotation
        walked.append(part)
    return annotation


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    models: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        models.extend(_models_in(arg))
    return models


def _parse_value(value_text: str, annotation: Any, origin: str) -> Any:
    args = set(get_args(annotation)) if get_origin(annotation) in (Union, _UnionType) else {annotation}
    if str in args:
        if type(None) in args and value_text.lower() in ("null", "none", "~", ""):
            return None
        return value_text
    try:
        value = yaml.load(value_text, Loader=RecipeLoader) if value_text else None  # noqa: S506 - safe
    except yaml.YAMLError as exc:
        raise RecipeError(f"{origin}: the value is not valid YAML ({_problem(exc)})") from None
    if isinstance(value, str) and args & {int, float} and _NUMBER.match(value):
        # YAML 1.1 reads 1e23 (no dot) as text; for a numeric key it is the number, so that the
        # schema checks its range and names the bound.
        value = float(value)
    return value


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _set_path(raw: dict[str, Any], key_path: list[str], value: Any, origin: str) -> None:
    node = raw
    for part in key_path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{origin}: {part!r} holds a value, not a section")
        node = child
    node[key_path[-1]] = value


# ----------------------------------------------------------------------------- errors


def _format_validation_error(exc: ValidationError, source: str, origins: _Origins) -> str:
    lines = [f"{source}: the recipe is not valid ({exc.error_count()} problem(s)):"]
    errors = exc.errors(include_url=False)
    for error in errors[:_MAX_ERRORS_SHOWN]:
        loc = [str(p) for p in error["loc"] if not _is_union_tag(p)]
        key = ".".join(loc) or "(top level)"
        where = origins.find(loc)
        header = f"  {key}" + (f"  (from {where})" if where and where != source else "")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            detail = f"unknown key {loc[-1]!r}" + _did_you_mean(loc[-1], allowed)
            if allowed:
                detail += f"\n    allowed here: {', '.join(sorted(allowed))}"
        elif error["type"] == "missing":
            detail = "required key is missing; add it"
        elif error["type"] == "int_parsing_size":  # beyond 64 bits: name the key's own bound
            bound = _upper_bound(loc)
            detail = "too large" + (
                f"; Input should be less than or equal to {bound}" if bound is not None else ""
            ) + f"; got {_short(error.get('input'))}"
        else:
            message = error["msg"].removeprefix("Value error, ")
            value = error.get("input")
            detail = message if isinstance(value, dict) else f"{message}; got {_short(value)}"
        lines.append(f"{header}\n    {detail}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS_SHOWN} more")
    lines.append("See docs/recipe.md for every key, its type and default.")
    return "\n".join(lines)


_MAX_ERRORS_SHOWN = 20


def _is_union_tag(part: Any) -> bool:
    return part in ("coco", "shapes") or (isinstance(part, str) and part.startswith("function-"))


def _allowed_keys(loc: Sequence[str]) -> dict[str, Any]:
    annotation: Any = Recipe
    for part in loc:
        models = _models_in(annotation)
        fields = {name: f for m in models for name, f in m.model_fields.items()}
        if part not in fields:
            return {}
        annotation = fields[part].annotation
    return {name: None for m in _models_in(annotation) for name in m.model_fields}


def _upper_bound(loc: Sequence[str]) -> Any:
    """The `le` bound of the field at `loc`, if it has one."""
    annotation: Any = Recipe
    info = None
    for part in loc:
        fields = {name: f for m in _models_in(annotation) for name, f in m.model_fields.items()}
        if part not in fields:
            return None
        info = fields[part]
        annotation = info.annotation
    bounds = [getattr(m, "le", None) for m in (info.metadata if info else [])]
    return next((b for b in bounds if b is not None), None)


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _mark_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _problem(exc: yaml.YAMLError) -> str:
    return str(getattr(exc, "problem", None) or exc).strip()


def _diff(current: Any, default: Any) -> Any:
    if isinstance(current, dict) and isinstance(default, dict):
        out = {}
        for key, value in current.items():
            if key not in default:
                out[key] = value
            elif value != default[key]:
                out[key] = _diff(value, default[key])
        return out
    return current


class _FlowListDumper(yaml.SafeDumper):
    """Writes lists of scalars (and lists of such lists) on one line: `[0.5, 1.0, 2.0]`."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(v, dict | list) for v in data)
    nested = all(isinstance(v, list) and all(not isinstance(x, dict | list) for x in v) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=bool(data) and (flat or nested))


_FlowListDumper.add_representer(list, _represent_list)

try:  # Python 3.10+: `int | None` annotations are types.UnionType
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover
    _UnionType = Union  # type: ignore[misc,assignment]
