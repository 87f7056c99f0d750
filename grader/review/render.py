"""Pages from autoescaping Jinja2 templates, with the filters that keep student text inert and readable."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment

from grader.common.templating import environment as templating_environment

TEMPLATES = Path(__file__).with_name("templates")


def url_part(text) -> str:
    """A student's name as one URL path segment."""
    return quote(str(text).encode("utf-8", "surrogatepass"), safe="")


def pts(x) -> str:
    return "" if x is None else f"{float(x):g}"


def environment() -> Environment:
    """The shared environment (with `inert`) plus the review's own filters."""
    return templating_environment(TEMPLATES, strict=False, filters={"urlpart": url_part, "pts": pts})
