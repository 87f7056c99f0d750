"""What the static reports share: their templates, numbers as people read them, figures as data URIs.

Reports are opened from a mail attachment or an LMS upload, so they carry their CSS and images inline
and a Content-Security-Policy that forbids scripts and any network access (templates/base.html).
The Python side hands the templates plain data; all markup, and all escaping, is the templates'.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.common.templating import environment

TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class Figure:
    """An embedded image: src is a data: URI, alt and caption plain text."""

    src: str
    alt: str
    caption: str = ""


@functools.lru_cache(maxsize=1)
def _environment():
    """Built once per process: a class's pages then share the compiled templates (the environment is never changed)."""
    return environment(TEMPLATES, strict=True)


def render(template: str, **data: Any) -> str:
    """A report page from its template and plain data."""
    return _environment().get_template(template).render(**data)


def num(value: Any) -> str:
    """A number as people read it: 2 not 2.0, 0.001 not 1e-03, yes/no for booleans, a dash for none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot, so no global backend state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_data_uri(fig) -> str:
    """The figure as a base64 PNG data URI (no Software metadata, so reruns give the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
