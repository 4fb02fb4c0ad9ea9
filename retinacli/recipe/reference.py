"""The recipe reference table, generated from the schema's field descriptions.

`python -m retinacli.recipe.reference` rewrites the generated part of docs/recipe.md; a test
fails when that part is out of date or any key is missing from it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from retinacli.recipe.schema import Recipe

BEGIN = "<!-- BEGIN GENERATED: python -m retinacli.recipe.reference -->"
END = "<!-- END GENERATED -->"


class KeyDoc(NamedTuple):
    path: str
    type: str
    default: str
    description: str


def iter_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> Iterator[KeyDoc]:
    """Every leaf key of the schema, depth first, with its type, default and description."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        submodels = _submodels(info.annotation)
        if submodels and name != "dataset":
            yield from iter_keys(submodels[0], f"{path}.")
            continue
        if name == "dataset":
            yield KeyDoc(path, "coco | shapes | null", "null", info.description or "")
            for sub in submodels:
                kind = sub.model_fields["kind"].default
                yield from iter_keys(sub, f"{path}.(kind: {kind}).")
            continue
        default = info.default
        if default is PydanticUndefined and info.default_factory is not None:
            default = info.default_factory()
        yield KeyDoc(
            path,
            _type_text(info.annotation) + _range_text(info.metadata),
            "required" if default is PydanticUndefined else json.dumps(_jsonable(default)),
            info.description or "",
        )


def render_table() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in iter_keys():
        default = key.default if len(key.default) <= 60 else key.default[:57] + "..."
        rows.append(f"| `{key.path}` | {key.type} | `{default}` | {key.description} |")
    return "\n".join(rows)


def update_doc(path: Path) -> bool:
    """Rewrite the generated section of `path`; True if the text changed."""
    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{render_table()}\n{END}{tail}"
    path.write_text(new, encoding="utf-8")
    return new != text


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_submodels(arg))
    return found


def _type_text(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("Literal", "one of ").replace("|", "\\|")


def _range_text(metadata: list[Any]) -> str:
    """The field's numeric range as `in [1, 4096]`, `in (0, 1)`, `>= 0` or `> 0` ('' if none)."""
    low = next((("[", m.ge) for m in metadata if getattr(m, "ge", None) is not None), None)
    low = low or next((("(", m.gt) for m in metadata if getattr(m, "gt", None) is not None), None)
    high = next(((m.le, "]") for m in metadata if getattr(m, "le", None) is not None), None)
    high = high or next(((m.lt, ")") for m in metadata if getattr(m, "lt", None) is not None), None)
    if low and high:
        return f" in {low[0]}{_number(low[1])}, {_number(high[0])}{high[1]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {_number(low[1])}"
    if high:
        return f" {'<=' if high[1] == ']' else '<'} {_number(high[0])}"
    return ""


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"  # as the schema's errors write it


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/recipe.md")
    print(("updated " if update_doc(target) else "unchanged ") + str(target))
