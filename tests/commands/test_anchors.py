"""`retina anchors` flags are overrides of the recipe: same defaults, same checks, same key paths."""

from __future__ import annotations

import pytest

from retinacli.build import build_anchor_spec
from retinacli.commands.anchors import anchors, parse_image_size, strides_to_stages
from retinacli.errors import RecipeError, UsageError
from retinacli.recipe import Recipe


def test_no_flags_give_the_default_recipe():
    result = anchors(None)
    assert result.spec == build_anchor_spec(Recipe().model)
    assert result.layout.image_size == (800, 1333)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": "32..500"}, r"model\.anchors\.sizes  \(from --sizes 32\.\.500\)\n.*power of two"),
        ({"sizes": "32,abc"}, r"model\.anchors\.sizes  \(from --sizes 32,abc\)\n.*not an anchor-size form"),
        ({"aspect_ratios": "0.5,0,2"}, r"model\.anchors\.aspect_ratios  \(from --aspect-ratios 0\.5,0,2\)\n.*positive"),
        ({"aspect_ratios": "wide"}, r"model\.anchors\.aspect_ratios  \(from --aspect-ratios wide\)"),
        ({"offset": 1.0}, r"model\.anchors\.offset  \(from --offset 1\)\n.*less than 1"),
        ({"sizes": "32..512", "strides": "8,16,32"}, r"anchors\.sizes has 5 levels but the pyramid has 3"),
        ({"sizes": "[[32, 40], [64], [1], [2], [3]]"}, "same number of anchors"),
        ({"sizes": "[[32, 40"}, r"--sizes \[\[32, 40: the value is not valid YAML"),
    ],
)
def test_bad_flags_are_recipe_errors_naming_the_key_and_the_flag(kwargs, message):
    with pytest.raises(RecipeError, match=message):
        anchors(None, **kwargs)


@pytest.mark.parametrize(
    ("strides", "stages"),
    [
        ("8,16,32,64,128", ["res3", "res4", "res5"]),
        ("4,8,16,32,64,128", ["res2", "res3", "res4", "res5"]),
        ("32,64,128", ["res5"]),
        ("4 8 16", ["res2"]),
    ],
)
def test_strides_name_the_fpn_inputs(strides, stages):
    assert strides_to_stages(strides) == stages
    spec = anchors(None, strides=strides, sizes="16").spec
    assert list(spec.strides) == [int(s) for s in strides.replace(",", " ").split()]


@pytest.mark.parametrize(
    "strides",
    ["8,32", "8,16", "8,12,16,32,64", "16,8,32,64,128", "8,16,32,64,128,256", "2,4,8", "64,128,256", "a,b,c"],
)
def test_strides_the_fpn_cannot_build_are_refused(strides):
    with pytest.raises(UsageError, match=f"--strides {strides}: "):
        strides_to_stages(strides)


def test_flags_also_override_a_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  anchors:\n    sizes: '16..256'\n    scales: 2\n")
    assert anchors(recipe).spec.sizes[0] == (16.0, 16 * 2**0.5)
    assert anchors(recipe, sizes="32..512", scales=3).spec == build_anchor_spec(Recipe().model)


def test_image_size_forms():
    assert parse_image_size("800x1333") == (800, 1333)
    assert parse_image_size(" 600 X 1000 ") == (600, 1000)
    for bad in ("800by1333", "800x", "0x10", "-1x5"):
        with pytest.raises(UsageError, match="HEIGHTxWIDTH"):
            parse_image_size(bad)


def test_nested_and_base_size_forms():
    spec = anchors(None, sizes="[[20, 30]]", aspect_ratios="1").spec
    assert spec.sizes == ((20.0, 30.0),) * 5
    spec = anchors(None, sizes="32,64,128,256,512", scales=2).spec
    assert spec.strides == (8, 16, 32, 64, 128) and spec.sizes[1] == (64.0, 64 * 2**0.5)
