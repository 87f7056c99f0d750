"""Pages from autoescaping Jinja2 templates, with the filters that keep student text inert and readable."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")
# bidi embeddings, overrides and isolates, marks: shown as their code point so text cannot reorder itself
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def inert(text) -> str:
    """Student text made plain: control characters as their pictures, bidi controls named, lone surrogates replaced.
    Escaping of <, >, & and quotes is left to autoescaping."""
    text = "" if text is None else str(text)
    text = _SURROGATE.sub("\ufffd", text)
    text = _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", text)
    return _CONTROL.sub(lambda m: chr(0x2400 + ord(m.group())) if ord(m.group()) < 0x20 else "\ufffd", text)


def url_part(text) -> str:
    """A student's name as one URL path segment."""
    return quote(str(text).encode("utf-8", "surrogatepass"), safe="")


def pts(x) -> str:
    return "" if x is None else f"{float(x):g}"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(inert=inert, urlpart=url_part, pts=pts)
    return env
