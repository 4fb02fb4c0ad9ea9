"""Fuzzing the recipe loader, `--set` and the anchor-size forms (`pytest -m fuzz`): generated
and mutated recipes, overrides and expressions give a Recipe or a RecipeError (exit code 2),
never a traceback, a hang or code execution."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from retinacli.recipe import Recipe, load_recipe
from retinacli.recipe.anchor_sizes import AnchorSizeError, parse_anchor_sizes
from retinacli.recipe.reference import iter_keys
from retinacli.recipe.safe_expr import UnsafeExpressionError, evaluate
from tests.fuzzing import FUZZ, expect_clean, tried

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
RECIPE_TEXTS = [p.read_text() for p in sorted((REPO / "recipes").glob("*.yaml"))]
KEYS = sorted({k.path.split(".(kind")[0] for k in iter_keys()})
MARKER = Path(tempfile.gettempdir()) / "retinacli-fuzz-code-ran"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["32..512", "1..1e999", "inf", "nan", "-1", "0", "~", "[]", "{}"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# What a code-running YAML loader would execute: must be refused before anything is built
python_tags = st.sampled_from([
    f"!!python/object/apply:os.system ['touch {MARKER}']",
    f"!!python/object/apply:eval ['open(\"{MARKER}\", \"w\")']",
    "!!python/name:os.system",
    "!!python/object/new:type ['x', [], {}]",
    "!!python/module:os",
])


def _nested(key: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _load_text(text: str, test: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        return expect_clean(lambda: load_recipe(path), test=test)


@FUZZ
@given(
    base=st.sampled_from(RECIPE_TEXTS),
    cuts=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 40), st.text(max_size=12)), max_size=4),
)
def test_mutated_recipe_files(base: str, cuts):
    text = base
    for start, length, insert in cuts:  # delete, replace and insert characters
        start = min(start, len(text))
        text = text[:start] + insert + text[start + length :]
    result = _load_text(text, "recipe: mutated recipes/*.yaml")
    assert result is None or isinstance(result, Recipe)


@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=5), tag=st.none() | python_tags)
def test_generated_recipe_files(entries, tag):
    data: dict = {}
    for key, value in entries:
        data = {**data, **_nested(key, value)}
    text = yaml.safe_dump(data, allow_unicode=True)
    if tag is not None:
        text += f"model:\n  anchors:\n    sizes: {tag}\n"
    result = _load_text(text, "recipe: generated keys and values")
    assert result is None or isinstance(result, Recipe)
    assert not MARKER.exists()


@FUZZ
@given(
    key=st.sampled_from(KEYS) | st.text(max_size=30),
    value=st.text(max_size=40) | st.sampled_from(["null", "[1, 2", "{a: 1}", "1e999", "-0", "True", "!!python/name:os.system"]),
    separator=st.sampled_from(["=", "==", " = ", ""]),
)
def test_set_overrides(key: str, value: str, separator: str):
    result = expect_clean(lambda: load_recipe(None, [f"{key}{separator}{value}"]), test="recipe: --set KEY=VALUE")
    assert result is None or isinstance(result, Recipe)
    assert not MARKER.exists()


sizes_forms = st.one_of(
    st.text(alphabet="0123456789.,e -+", max_size=30),
    st.builds(lambda a, b: f"{a}..{b}", st.integers(0, 10**400), st.integers(0, 10**400)),
    st.floats(allow_nan=True) | st.integers(-(2**80), 2**80),
    st.lists(st.floats(allow_nan=True) | st.integers(-5, 2**70), max_size=6),
    st.lists(st.lists(st.floats(allow_nan=True) | st.integers(-5, 2**70), max_size=4), max_size=6),
    values,
)


@FUZZ
@given(value=sizes_forms, scales=st.none() | st.integers(-3, 8) | st.booleans())
def test_anchor_size_forms(value, scales):
    try:
        tried("anchors: parse_anchor_sizes")
        sizes = parse_anchor_sizes(value, scales=scales)
    except AnchorSizeError as exc:
        assert str(exc)
        return
    assert sizes and all(level and all(math.isfinite(s) and s > 0 for s in level) for level in sizes)


@FUZZ
@given(value=sizes_forms, scales=st.none() | st.integers(-3, 8))
def test_anchor_sizes_through_the_recipe(value, scales):
    overrides = [f"model.anchors.sizes={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    if scales is not None:
        overrides.append(f"model.anchors.scales={scales}")
    result = expect_clean(lambda: load_recipe(None, overrides), test="anchors: model.anchors.sizes through --set")
    assert result is None or all(s > 0 and math.isfinite(s) for level in result.model.anchors.sizes for s in level)


def _expressions():
    leaf = st.integers(-(10**6), 10**6).map(str) | st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.sampled_from(
        ["x", "__import__('os')", "open", "().__class__", "'a'", "None", "True", "[]", "10**64"]
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]} for x in {t[1]}]"),
            # comprehensions over long literal lists, nested: the global step budget's case
            st.tuples(inner, st.integers(1, 400)).map(lambda t: f"[{t[0]} for y in [{', '.join(['1'] * t[1])}]]"),
            st.tuples(inner, st.sampled_from(["()", ".real", "[0]", " if 1 else 2", ""])).map("".join),
        ),
        max_leaves=10,
    )


@FUZZ
@given(expression=_expressions() | st.text(max_size=40))
def test_safe_expressions(expression: str):
    tried("anchors: detectron2 eval expressions (safe_expr)")
    try:
        evaluate(expression)
    except UnsafeExpressionError as exc:
        assert str(exc)
    assert not MARKER.exists()


@FUZZ
@given(
    levels=st.integers(1, 12),
    width=st.integers(1, 12),
    key=st.sampled_from(KEYS),
    flow=st.booleans(),
)
def test_alias_chains(levels: int, width: int, key: str, flow: bool):
    # width**levels values once expanded: small ones are values like any other, large ones must
    # be refused quickly (the deadline), never expanded
    lines = [f"x0: &x0 [{', '.join(['1'] * width)}]"]
    for level in range(1, levels + 1):
        lines.append(f"x{level}: &x{level} [{', '.join([f'*x{level - 1}'] * width)}]")
    parts = key.split(".")
    if flow:
        nested = "*x" + str(levels)
        for part in reversed(parts):
            nested = "{" + f"{part}: {nested}" + "}"
        lines.append(f"use: {nested}")
    else:
        lines += [f"{'  ' * i}{part}:" for i, part in enumerate(parts)]
        lines[-1] += f" *x{levels}"
    result = _load_text("\n".join(lines) + "\n", "recipe: YAML alias chains")
    assert result is None or isinstance(result, Recipe)


@FUZZ
@given(depth=st.integers(0, 4000), opener=st.sampled_from(["[", "{a: "]), key=st.sampled_from(KEYS))
def test_nesting(depth: int, opener: str, key: str):
    closer = "]" if opener == "[" else "}"
    text = f"{key.split('.')[0]}: {opener * depth}1{closer * depth}\n"
    result = _load_text(text, "recipe: YAML nesting depth")
    assert result is None or isinstance(result, Recipe)
