"""The ResNet stages and the pyramid levels RetinaNet builds from them: the one table.

Stage `resN` (res2..res5) outputs features of stride 2**N in input pixels (res2: 4 ... res5: 32).
The FPN turns consecutive stages into levels of the same strides, named `pN`, and adds
NUM_TOP_LEVELS more above the last (P6 and P7, each stride double the one below): detectron2's
RetinaNet takes res3..res5 and gives p3..p7, strides 8..128. Pure Python, so the recipe layer and
the engine share it without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

STAGES = ("res2", "res3", "res4", "res5")
"""The ResNet stages a pyramid can be built from, finest first."""
NUM_TOP_LEVELS = 2
"""Levels the FPN adds above its last input (P6 and P7)."""


def stage_stride(stage: str) -> int:
    """Stride of a ResNet stage's output in input pixels (res2: 4 ... res5: 32)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return 2 ** int(stage[3:])


def pyramid_levels(in_features: Sequence[str]) -> list[str]:
    """The level names the FPN builds from consecutive stages `in_features`, top levels
    included: ['res3', 'res4', 'res5'] -> ['p3', 'p4', 'p5', 'p6', 'p7']."""
    first = int(in_features[0][3:])
    return [f"p{n}" for n in range(first, first + len(in_features) + NUM_TOP_LEVELS)]


def level_stride(level: str) -> int:
    """Stride of pyramid level `pN` in input pixels (2**N)."""
    return 2 ** int(level[1:])


def stages_for_strides(strides: Sequence[int]) -> list[str] | None:
    """The FPN `in_features` whose pyramid has exactly the level strides `strides` (8, 16, 32,
    64, 128 -> res3..res5), or None when no consecutive run of stages gives them: the strides
    must double, at least NUM_TOP_LEVELS + 1 of them, starting at a stage's stride."""
    values = list(strides)
    num_stages = len(values) - NUM_TOP_LEVELS
    if num_stages < 1 or any(b != 2 * a for a, b in zip(values, values[1:], strict=False)):
        return None
    first = next((i for i, stage in enumerate(STAGES) if stage_stride(stage) == values[0]), None)
    if first is None or first + num_stages > len(STAGES):
        return None
    return list(STAGES[first : first + num_stages])
