"""Shared pieces of the self-contained HTML reports: page frame, escaping, numbers, embedded PNGs.

Reports are opened from a mail attachment or an LMS upload, so they carry their CSS and
images inline and a Content-Security-Policy that forbids scripts and any network access.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 60rem;
       padding: 0 1rem; color: #1d2430; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin: 0 0 .4rem 0; }
.muted { color: #5c6778; }
.box { border: 1px solid #d5dbe3; border-radius: 6px; padding: .8rem 1rem; margin: 1rem 0; }
.status-bad { border-color: #d9534f; background: #fdf3f2; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .85rem; font-weight: 600; }
.v-right { background: #dff3e4; color: #1e6b34; }
.v-partly { background: #fff2d6; color: #7a5300; }
.v-wrong { background: #fbe1e0; color: #8c211d; }
.v-review { background: #e3ebfb; color: #1f4a94; }
.v-missing { background: #eceff3; color: #4a5361; }
.answer { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f8fa; border-left: 3px solid #c5ccd6;
          padding: .4rem .7rem; margin: .3rem 0; }
.review { color: #1f4a94; }
.override { color: #5b3a8c; }
pre.traceback { background: #1f2329; color: #e6e6e6; padding: .7rem; overflow-x: auto; font-size: .82rem;
                white-space: pre-wrap; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d5dbe3; padding: .2rem .55rem; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
figure { margin: .6rem 0; }
figcaption { font-size: .85rem; color: #5c6778; }
"""


def esc(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute; student text is hostile input."""
    return html.escape(str(value), quote=True)


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


def page(title: str, body: str) -> str:
    """A complete HTML document around body (already escaped markup)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas, without pyplot, so no global backend state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_data_uri(fig) -> str:
    """The figure as a base64 PNG data URI (no Software metadata, so reruns give the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure><img src=\"{uri}\" alt=\"{esc(alt)}\">{cap}</figure>"
