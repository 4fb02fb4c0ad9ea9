"""A restricted arithmetic evaluator for the Python expressions detectron2 configs embed.

detectron2 writes anchor sizes as `!!python/object/apply:eval ["[[x, x * 2**(1.0/3)] for x in
[32, 64]]"]` and loads them with `yaml.unsafe_load`, which runs arbitrary code. This module
computes such expressions from their syntax tree alone: numbers, `+ - * / // % **`, unary
minus and plus, lists and tuples, and list comprehensions whose iterables are themselves
literal. Names exist only as comprehension variables. Anything else is refused; nothing is
ever passed to `eval`. Arithmetic applies to numbers only (never to lists), and results that
are complex, too large (more than 4096 bits) or undefined (division by zero, a float out of
range) are refused too, so that no expression can hang the process or exhaust its memory.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_MAX_POWER = 64  # keeps `10 ** 10 ** 10` from hanging the process
_MAX_ITEMS = 100_000
_MAX_INT_BITS = 4096  # 10**1233: far beyond any anchor size, instant to compute


class UnsafeExpressionError(ValueError):
    """The expression uses something outside the allowed arithmetic subset."""


def evaluate(expression: str) -> Any:
    """Compute `expression` (numbers, arithmetic, lists, literal list comprehensions).

    Raises UnsafeExpressionError naming the first construct that is not allowed.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise UnsafeExpressionError(f"not a valid expression: {exc.msg}") from None
    return _eval(tree.body, {})


def _eval(node: ast.AST, names: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise UnsafeExpressionError(f"only numbers are allowed, not {node.value!r}")
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise UnsafeExpressionError(f"unknown name {node.id!r}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, names), _eval(node.right, names)
        if not (_is_number(left) and _is_number(right)):
            # `[0] * 10**9` would allocate gigabytes: arithmetic is on numbers only
            raise UnsafeExpressionError(f"{type(node.op).__name__} applies to numbers only, not to lists")
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POWER:
            raise UnsafeExpressionError(f"exponent {right} is too large")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ArithmeticError as exc:  # division by zero, a float out of range
            raise UnsafeExpressionError(f"{type(exc).__name__}: {exc}") from None
        return _checked(result)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        operand = _eval(node.operand, names)
        if not _is_number(operand):
            raise UnsafeExpressionError(f"{type(node.op).__name__} applies to numbers only, not to lists")
        return _UNARY[type(node.op)](operand)
    if isinstance(node, ast.List | ast.Tuple):
        values = [_eval(element, names) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.ListComp):
        return _list_comprehension(node, names)
    raise UnsafeExpressionError(f"{type(node).__name__} is not allowed")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(value: Any) -> Any:
    """A result that stays a real number of reasonable size: `(-8) ** 0.5` is complex, and
    powers of powers (`((10**64)**64)**64...`) would take minutes and gigabytes to compute."""
    if isinstance(value, complex):
        raise UnsafeExpressionError(f"the result {value} is not a real number")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise UnsafeExpressionError(f"an intermediate result has {value.bit_length()} bits, more than {_MAX_INT_BITS}")
    return value


def _list_comprehension(node: ast.ListComp, names: dict[str, Any]) -> list[Any]:
    results: list[Any] = []

    def loop(generator_index: int, scope: dict[str, Any]) -> None:
        if generator_index == len(node.generators):
            results.append(_eval(node.elt, scope))
            if len(results) > _MAX_ITEMS:
                raise UnsafeExpressionError("the comprehension produces too many items")
            return
        generator = node.generators[generator_index]
        if generator.ifs or generator.is_async:
            raise UnsafeExpressionError("comprehension conditions are not allowed")
        if not isinstance(generator.target, ast.Name):
            raise UnsafeExpressionError("comprehension targets must be plain names")
        iterable = _eval(generator.iter, scope)
        if not isinstance(iterable, list | tuple):
            raise UnsafeExpressionError("comprehensions may iterate only over lists")
        for value in iterable:
            loop(generator_index + 1, {**scope, generator.target.id: value})

    loop(0, dict(names))
    return results
