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
