"""The one way a value reaches the report page: escaped text, formatted numbers, embedded data.

A run folder can come from a stranger, so every value the page shows (a class name, an error
kind, a metric key, a recipe value, a file name, a line of log.txt) is data, never markup.
`text` is the only way text enters the HTML, in element content and in quoted attribute values
alike: control and bidirectional-override characters are first shown as visible escapes
(`retinacli.text.printable`, so nothing reorders or hides what a reader sees), then `&`, `<`, `>`,
`"` and `'` become character references (`html.escape(..., quote=True)`). Numbers are formatted
here from real numbers only; anything else shows as a dash. The page carries no script (and so
no JSON inside a `<script>` element) and no link: pictures are `data:` URIs of bytes read here.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from retinacli.text import printable

DASH = "—"
_INT_LIMIT = 10**18  # beyond this an "integer" from a file is not a count we show


def text(value: Any) -> str:
    """`value` as text for HTML element content or a quoted attribute value."""
    return html.escape(printable(value, keep_newlines=True), quote=True)


def number(value: Any, *, digits: int = 3) -> str:
    """A finite int or float with `digits` decimals; a dash for anything else (None, NaN,
    infinity, booleans, strings, numbers beyond float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DASH
    try:
        as_float = float(value)
    except OverflowError:
        return DASH
    if not math.isfinite(as_float):
        return DASH
    return f"{as_float:.{digits}f}"


def count(value: Any) -> str:
    """An integer (a count, an iteration, an image id) as digits; a dash for anything else."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= _INT_LIMIT:
        return DASH
    return str(value)


def data_uri(mime: str, data: bytes) -> str:
    """A `data:` URI of `data`, ready for a quoted attribute (base64 has no character to escape;
    the MIME type goes through `text` all the same)."""
    return f"data:{text(mime)};base64,{base64.b64encode(data).decode('ascii')}"

