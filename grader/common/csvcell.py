"""Every CSV cell the project writes, and how its own readers undo it.

A spreadsheet runs a cell that begins with =, +, -, @, tab or carriage return as a formula
(CSV injection, OWASP): such text cells get a leading apostrophe. Numbers stay numbers, and
a text that is a plain decimal number is left as it is. Text that already begins with an
apostrophe gets one more, so `uncell(cell(x)) == x` for every x and `-ana` reads back as `-ana`.
"""

from __future__ import annotations

import math
import re

LINE_END = "\r\n"  # RFC 4180; it also makes the csv module quote a cell holding a lone \r, which would start a row
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def cell(value) -> str:
    """One CSV cell: a number as a number, text neutralised; None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else ""
    text = str(value)
    if text.startswith(FORMULA_START + ("'",)) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def uncell(text: str) -> str:
    """What `cell` wrote, read back: one leading apostrophe it added is dropped."""
    if len(text) > 1 and text[0] == "'" and text[1:].startswith(FORMULA_START + ("'",)) and not _PLAIN_NUMBER.match(text[1:]):
        return text[1:]
    return text
