"""The one stage/level table: strides, level names and their inverse."""

from __future__ import annotations

import pytest

from retinacli.levels import STAGES, level_stride, pyramid_levels, stage_stride, stages_for_strides


def test_stage_strides_double_from_res2():
    assert [stage_stride(s) for s in STAGES] == [4, 8, 16, 32]
    with pytest.raises(ValueError, match="stage must be one of"):
        stage_stride("res6")


def test_detectron2s_pyramid():
    assert pyramid_levels(["res3", "res4", "res5"]) == ["p3", "p4", "p5", "p6", "p7"]
    assert [level_stride(n) for n in pyramid_levels(["res3", "res4", "res5"])] == [8, 16, 32, 64, 128]
    assert pyramid_levels(["res2", "res3"]) == ["p2", "p3", "p4", "p5"]


@pytest.mark.parametrize("stages", [["res2", "res3", "res4", "res5"], ["res3", "res4", "res5"], ["res5"], ["res4", "res5"]])
def test_strides_to_stages_inverts_the_pyramid(stages):
    strides = [level_stride(n) for n in pyramid_levels(stages)]
    assert stages_for_strides(strides) == stages


@pytest.mark.parametrize("strides", [[8, 32], [8, 16, 33, 64], [2, 4, 8], [64, 128, 256, 512], [8, 16]])
def test_strides_no_pyramid_gives_are_none(strides):
    assert stages_for_strides(strides) is None
