import pytest

from retinacli.recipe.safe_expr import UnsafeExpressionError, evaluate


def test_detectron2_anchor_expression_equals_python_arithmetic():
    expression = "[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"
    value = evaluate(expression)
    assert value[0] == [32, 32 * 2 ** (1.0 / 3), 32 * 2 ** (2.0 / 3)]
    assert [level[0] for level in value] == [32, 64, 128, 256, 512]


def test_arithmetic_lists_and_nested_comprehensions():
    assert evaluate("[-1, +2, 7 // 2, 7 % 4, 3 / 2, (1, 2)]") == [-1, 2, 3, 3, 1.5, (1, 2)]
    assert evaluate("[a * b for a in [1, 2] for b in [10, 100]]") == [10, 100, 20, 200]


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "[x for x in range(3)]",
        "x",
        "'text'",
        "(lambda: 1)()",
        "[1][0]",
        "2 ** 10 ** 10",
        "[x for x in [1] if x]",
        "[1, 2",
    ],
)
def test_refuses_everything_but_arithmetic(expression):
    with pytest.raises(UnsafeExpressionError):
        evaluate(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "ZeroDivisionError"),
        ("5 % 0", "ZeroDivisionError"),
        ("1e300 ** 2", "OverflowError"),
        ("(-8) ** 0.5", "is not a real number"),
        ("[0] * 10 ** 9", "applies to numbers only, not to lists"),
        ("[1] + [2]", "applies to numbers only"),
        ("-[1]", "applies to numbers only"),
        ("((10 ** 64) ** 64) ** 64", "more than 4096"),
    ],
)
def test_refuses_results_that_are_undefined_or_would_exhaust_the_machine(expression, message):
    # inputs of the kind tests/recipe/test_loading_fuzz.py generates; before, each was a traceback,
    # a complex number passed on as a size, or minutes of computing and gigabytes of memory
    with pytest.raises(UnsafeExpressionError, match=message.replace("(", r"\(")):
        evaluate(expression)


def _nested_comprehension(levels: int, items: int) -> str:
    values = "[" + ", ".join(["0"] * items) + "]"
    expression = "1"
    for level in range(levels):
        expression = f"[{expression} for v{level} in {values}]"
    return expression


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # 100**5 = 10**10 values: each comprehension alone is small, together they never end
        (_nested_comprehension(5, 100), "more than 100000 steps"),
        # one comprehension over a product of long lists
        ("[a * b for a in [" + ", ".join(["1"] * 400) + "] for b in [" + ", ".join(["2"] * 400) + "]]",
         "more than 100000 steps"),
        ("1" + " + 1" * 6000, "characters, more than 10000"),
        ("-" * 5000 + "1", "nests more than 100 levels"),
        ("[" * 150 + "1" + "]" * 150, "nests more than 100 levels|too many nested parentheses"),
    ],
)
def test_the_whole_evaluation_has_one_work_budget(expression, message):
    # each of these ran for minutes or took gigabytes (or crashed with RecursionError) before
    with pytest.raises(UnsafeExpressionError, match=message):
        evaluate(expression)


def test_the_budget_leaves_every_real_anchor_expression_alone():
    # detectron2's model zoo spellings, and a generous one: 5 levels x 64 sizes
    assert len(evaluate(_nested_comprehension(2, 64))) == 64
    value = evaluate("[[x * 2 ** (i / 64) for i in [" + ", ".join(str(i) for i in range(64)) + "]] for x in [32, 64, 128, 256, 512]]")
    assert [len(level) for level in value] == [64] * 5
