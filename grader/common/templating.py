"""The one way HTML is made: an autoescaping Jinja2 environment over a template folder, and `inert`,
the filter that keeps student text plain (the review app and the static reports share both)."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Undefined, select_autoescape

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


def environment(folder: Path, *, strict: bool = True, filters: dict | None = None) -> Environment:
    """Templates from `folder`, autoescaped whatever their name; strict: a name the page lacks is an error, not ''."""
    env = Environment(loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined if strict else Undefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(inert=inert, **(filters or {}))
    return env
