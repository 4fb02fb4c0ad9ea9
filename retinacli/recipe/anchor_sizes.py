"""The forms in which anchor sizes may be written, shared by recipes and `retina anchors`.

Sizes are anchor side lengths in input pixels (sqrt of the anchor area), one list per FPN level.

Accepted forms:
- `"32..512"`: one base size per level, doubling from the first to the last (32, 64, 128,
  256, 512). Each base size x becomes `[x * 2**(i / scales) for i in range(scales)]`, so
  `scales: 3` gives detectron2's `[x, x * 2**(1/3), x * 2**(2/3)]`.
- `"32,64,128,256,512"` or `[32, 64, 128, 256, 512]`: the base sizes of each level, spelt out,
  expanded by `scales` in the same way.
- `[[32, 40.3, 50.8], [64, 80.6, 101.6], ...]`: explicit sizes, one inner list per level;
  a single inner list applies to every level. `scales` does not apply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

_RANGE = re.compile(r"^\s*(?P<first>\d+(\.\d*)?)\s*\.\.\s*(?P<last>\d+(\.\d*)?)\s*$")


MAX_SCALES = 64
"""The most sizes per level the compact forms expand to (detectron2's default is 3)."""


class AnchorSizeError(ValueError):
    """An anchor-size value is in none of the accepted forms."""


def parse_anchor_sizes(value: Any, *, scales: int | None) -> list[list[float]]:
    """Turn any accepted form into explicit sizes, one list per level (see module docstring).

    `scales` is the number of sizes per level for the compact forms (None means 1); giving
    it with explicit nested lists is an error, since it would be silently ignored.
    """
    if scales is not None and (isinstance(scales, bool) or not isinstance(scales, int) or scales < 1):
        raise AnchorSizeError(f"scales must be a whole number >= 1, got {scales!r}")
    if scales is not None and scales > MAX_SCALES:
        raise AnchorSizeError(f"scales {scales} is more than {MAX_SCALES} sizes per level; detectron2 uses 3")
    if isinstance(value, str):
        base_sizes = _parse_string(value)
    elif _is_number(value):
        base_sizes = [float(value)]
    elif isinstance(value, Sequence) and value and all(_is_number(v) for v in value):
        base_sizes = [float(v) for v in value]
    elif isinstance(value, Sequence) and value and all(_is_number_list(v) for v in value):
        if scales not in (None, 1):
            raise AnchorSizeError(
                "scales applies to the compact forms ('32..512' or a list of base sizes), "
                "not to explicit per-level lists; remove scales or write the sizes as '32..512'"
            )
        return [[_positive(float(size)) for size in level] for level in value]
    else:
        raise AnchorSizeError(
            f"{value!r} is not an anchor-size form; write '32..512' (with scales), a list of "
            "base sizes per level such as [32, 64, 128, 256, 512], or explicit per-level lists "
            "such as [[32, 40.3, 50.8], [64, 80.6, 101.6]]"
        )
    return expand_scales([_positive(size) for size in base_sizes], scales=scales or 1)


def expand_scales(base_sizes: Sequence[float], *, scales: int) -> list[list[float]]:
    """Each base size x becomes [x * 2**(i / scales) for i in range(scales)] (one level each)."""
    return [[size * 2 ** (i / scales) for i in range(scales)] for size in base_sizes]


def format_compact(sizes: Sequence[Sequence[float]]) -> tuple[str, int] | None:
    """The `("32..512", scales)` form that expands to `sizes` exactly, or None if there is none."""
    if not sizes or any(len(level) != len(sizes[0]) for level in sizes):
        return None
    scales = len(sizes[0])
    bases = [level[0] for level in sizes]
    if any(b <= 0 for b in bases) or any(bases[i + 1] != 2 * bases[i] for i in range(len(bases) - 1)):
        return None
    if expand_scales(bases, scales=scales) != [list(level) for level in sizes]:
        return None
    return f"{_number_text(bases[0])}..{_number_text(bases[-1])}", scales


def _parse_string(text: str) -> list[float]:
    match = _RANGE.match(text)
    if match:
        first, last = float(match["first"]), float(match["last"])
        if not math.isfinite(last):
            raise AnchorSizeError(f"{text!r}: {match['last']} is too large a size")
        if first <= 0 or last < first:
            raise AnchorSizeError(f"{text!r}: the range must go up from a positive size")
        levels = math.log2(last / first)
        if abs(levels - round(levels)) > 1e-9:
            raise AnchorSizeError(
                f"{text!r}: a range doubles per level, so the last size must be the first "
                f"times a power of two (e.g. {_number_text(first)}..{_number_text(first * 16)})"
            )
        return [first * 2**i for i in range(round(levels) + 1)]
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return [float(p) for p in parts] if parts else _fail(text)
    except ValueError:
        raise AnchorSizeError(
            f"{text!r} is not an anchor-size form; write '32..512' or '32,64,128,256,512'"
        ) from None


def _fail(text: str) -> list[float]:
    raise AnchorSizeError(f"{text!r} is empty; write '32..512' or '32,64,128,256,512'")


def _positive(size: float) -> float:
    if not math.isfinite(size) or size <= 0:
        raise AnchorSizeError(f"anchor sizes must be positive numbers, got {size!r}")
    return size


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_number_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and bool(value) and all(
        _is_number(v) for v in value
    )


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
