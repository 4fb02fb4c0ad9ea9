"""Text from data made safe to show: control characters escaped.

Class names, file names and messages that quote them can come from a stranger's dataset. A raw
ESC (or any C0/C1 control character, DEL, or a bidirectional override) printed to a terminal can
move the cursor, rewrite earlier lines, change the title, or reorder what a reader sees.
`printable` shows each such character as a visible escape (`\\x1b`, `\\u202e`), so the text reads
the same on any terminal and nothing in it acts. The CLI applies it to everything it prints
(`cli/app.py`, `cli/render.py`); HTML has its own escaping (`report/html.py`).
"""

from __future__ import annotations

import unicodedata

_KEEP_IN_MESSAGES = frozenset("\n")


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`str(text)` with every control, format-override and other non-printing character shown as
    a Python-style escape (`\\x1b`, `\\x7f`, `\\u202e`); tabs and, with `keep_newlines`, line feeds
    are kept. Plain letters of every script, spaces and punctuation are unchanged."""
    value = str(text)
    if value.isprintable():
        return value
    out: list[str] = []
    for char in value:
        if char.isprintable() or char == "\t" or (keep_newlines and char in _KEEP_IN_MESSAGES):
            out.append(char)
        elif unicodedata.category(char) == "Zs":  # odd spaces print as spaces
            out.append(" ")
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
