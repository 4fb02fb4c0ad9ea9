"""A restricted arithmetic evaluator for the Python expressions detectron2 configs embed.

detectron2 writes anchor sizes as `!!python/object/apply:eval ["[[x, x * 2**(1.0/3)] for x in
[32, 64]]"]` and loads them with `yaml.unsafe_load`, which runs arbitrary code. This module
computes such expressions from their syntax tree alone: numbers, `+ - * / // % **`, unary
minus and plus, lists and tuples, and list comprehensions whose iterables are themselves
literal. Names exist only as comprehension variables. Anything else is refused; nothing is
ever passed to `eval`. Arithmetic applies to numbers only (never to lists), and results that
are complex, too large (more than 4096 bits) or undefined (division by zero, a float out of
range) are refused too.

The work is bounded as a whole, so that no expression can hang the process or exhaust its
memory: the text is at most `MAX_EXPRESSION_CHARS` long and nests at most `MAX_DEPTH` deep, and
one evaluation performs at most `MAX_STEPS` steps in all, a step being one syntax node
evaluated or one comprehension iteration, however the comprehensions nest. Each value a step
makes is a number or a list built from earlier steps' values, so memory is bounded as well.
detectron2's anchor expressions take about a hundred steps.
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
_MAX_INT_BITS = 4096  # 10**1233: far beyond any anchor size, instant to compute

MAX_EXPRESSION_CHARS = 10_000
"""The longest expression text (detectron2's anchor expressions take under 100 characters)."""
MAX_DEPTH = 100
"""The deepest nesting of syntax nodes evaluated (keeps Python's recursion limit far away)."""
MAX_STEPS = 100_000
"""The most steps (syntax nodes evaluated plus comprehension iterations) of one evaluation,
a thousand times what detectron2's anchor expressions take, while comprehensions nested over
long literal lists (`[[[x for x in L] for y in L] for z in L]`) would otherwise multiply into
billions."""


class UnsafeExpressionError(ValueError):
    """The expression uses something outside the allowed arithmetic subset."""


def evaluate(expression: str) -> Any:
    """Compute `expression` (numbers, arithmetic, lists, literal list comprehensions).

    Raises UnsafeExpressionError naming the first construct that is not allowed, or the bound
    (length, nesting, `MAX_STEPS`) the expression would exceed.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpressionError(
            f"the expression has {len(expression)} characters, more than {MAX_EXPRESSION_CHARS}"
        )
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise UnsafeExpressionError(f"not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):  # the parser's own limits on nesting
        raise UnsafeExpressionError(f"the expression nests more than {MAX_DEPTH} levels deep") from None
    return _Evaluation().eval(tree.body, {}, 0)


class _Evaluation:
    """One evaluation and the steps it has taken (`MAX_STEPS` across the whole expression)."""

    def __init__(self) -> None:
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise UnsafeExpressionError(
                f"the expression takes more than {MAX_STEPS} steps to compute (anchor sizes take "
                "about a hundred); write the values out as a list"
            )

    def eval(self, node: ast.AST, names: dict[str, Any], depth: int) -> Any:
        self.step()
        if depth > MAX_DEPTH:
            raise UnsafeExpressionError(f"the expression nests more than {MAX_DEPTH} levels deep")
        depth += 1
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise UnsafeExpressionError(f"only numbers are allowed, not {_short(node.value)}")
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise UnsafeExpressionError(f"unknown name {_short(node.id)}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.eval(node.left, names, depth), self.eval(node.right, names, depth)
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
            operand = self.eval(node.operand, names, depth)
            if not _is_number(operand):
                raise UnsafeExpressionError(f"{type(node.op).__name__} applies to numbers only, not to lists")
            return _UNARY[type(node.op)](operand)
        if isinstance(node, ast.List | ast.Tuple):
            values = [self.eval(element, names, depth) for element in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.ListComp):
            return self.list_comprehension(node, names, depth)
        raise UnsafeExpressionError(f"{type(node).__name__} is not allowed")

    def list_comprehension(self, node: ast.ListComp, names: dict[str, Any], depth: int) -> list[Any]:
        results: list[Any] = []
        for generator in node.generators:
            if generator.ifs or generator.is_async:
                raise UnsafeExpressionError("comprehension conditions are not allowed")
            if not isinstance(generator.target, ast.Name):
                raise UnsafeExpressionError("comprehension targets must be plain names")

        def loop(generator_index: int, scope: dict[str, Any]) -> None:
            if generator_index == len(node.generators):
                results.append(self.eval(node.elt, scope, depth))
                return
            generator = node.generators[generator_index]
            iterable = self.eval(generator.iter, scope, depth)
            if not isinstance(iterable, list | tuple):
                raise UnsafeExpressionError("comprehensions may iterate only over lists")
            for value in iterable:
                self.step()
                loop(generator_index + 1, {**scope, generator.target.id: value})  # type: ignore[attr-defined]

        loop(0, dict(names))
        return results


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
