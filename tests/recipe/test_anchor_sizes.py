import pytest

from retinacli.recipe.anchor_sizes import (
    AnchorSizeError,
    expand_scales,
    format_compact,
    parse_anchor_sizes,
)


def test_range_with_scales_equals_detectron2_default():
    sizes = parse_anchor_sizes("32..512", scales=3)
    # detectron2: [[x, x * 2**(1.0/3), x * 2**(2.0/3)] for x in [32, 64, 128, 256, 512]]
    assert sizes == [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]]
    assert sizes[0][1] == pytest.approx(40.3174736, abs=1e-6)  # 32 * 1.25992105
    assert sizes[0][2] == pytest.approx(50.7968337, abs=1e-6)  # 32 * 1.58740105


def test_base_size_forms_agree():
    expected = [[16.0], [32.0], [64.0]]
    assert parse_anchor_sizes("16..64", scales=None) == expected
    assert parse_anchor_sizes("16,32,64", scales=1) == expected
    assert parse_anchor_sizes([16, 32, 64], scales=None) == expected
    assert parse_anchor_sizes("16 32 64", scales=None) == expected


def test_explicit_lists_are_kept_unrounded():
    assert parse_anchor_sizes([[32, 40.5], [64, 80.25]], scales=None) == [[32.0, 40.5], [64.0, 80.25]]


def test_expand_scales_two():
    # 10 * 2**(1/2) = 14.142135...
    assert expand_scales([10.0], scales=2) == [[10.0, 10.0 * 2**0.5]]


@pytest.mark.parametrize(
    ("value", "scales", "message"),
    [
        ("32..500", 3, "power of two"),
        ("512..32", 3, "go up"),
        ("0..32", 1, "positive"),
        ("big", 1, "not an anchor-size form"),
        ([[32, 64], [64, 128]], 3, "scales applies"),
        ([[-32]], None, "positive"),
        ({"a": 1}, None, "not an anchor-size form"),
        ([], None, "not an anchor-size form"),
        ("32..512", 0, "scales"),
    ],
)
def test_bad_forms_say_what_is_wrong(value, scales, message):
    with pytest.raises(AnchorSizeError, match=message):
        parse_anchor_sizes(value, scales=scales)


def test_format_compact_inverts_the_range_form():
    assert format_compact(parse_anchor_sizes("32..512", scales=3)) == ("32..512", 3)
    assert format_compact([[32.0], [64.0], [100.0]]) is None


def test_sizes_too_large_for_a_float_and_absurd_scales_are_refused():
    with pytest.raises(AnchorSizeError, match="too large a size"):
        parse_anchor_sizes("1.." + "9" * 400, scales=None)
    with pytest.raises(AnchorSizeError, match="more than 64 sizes per level"):
        parse_anchor_sizes("32..512", scales=10**9)  # would build five billion sizes
