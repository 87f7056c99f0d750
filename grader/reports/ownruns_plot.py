"""The figure of one sweep in the feedback's "Your own runs" section: the student's own curves per
grid value, over the reference's seed band for the same values (none when answers are hidden), the
answer's curve drawn thick."""

from __future__ import annotations

import functools
import json

from grader.reports.htmlkit import Figure, new_figure, num, png_data_uri
from grader.reports.refcurves import VARY_WORDS, same


def sweep_figure(plot: dict) -> Figure:
    """One panel per curve the sweep's questions read (training and/or test accuracy). Students whose runs
    the training service answered alike (the memo serves one history to every notebook asking for the same
    run) get the same figure, so a class draws each distinct one once per process."""
    return _sweep_cached(_Plot(plot))


class _Plot:
    """A plot dict made hashable by its JSON, for the cache."""

    def __init__(self, plot: dict):
        self.plot, self.key = plot, json.dumps(plot, sort_keys=True, default=repr)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Plot) and other.key == self.key


@functools.lru_cache(maxsize=256)
def _sweep_cached(keyed: _Plot) -> Figure:
    return _draw_sweep(keyed.plot)


def _draw_sweep(plot: dict) -> Figure:
    panels = plot["panels"]
    fig = new_figure(4.4 * len(panels) + 1.6, 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = _colors(plot["grid"])
    for ax, panel in zip(axes, panels):
        _draw_panel(ax, panel, plot, colors)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title=VARY_WORDS.get(plot["vary"], plot["vary"]),
               title_fontsize=8)
    vary = VARY_WORDS.get(plot["vary"], plot["vary"])
    shown = ", ".join(num(v) for v, _ in panels[0]["own"])
    caption = f"Your own curves per epoch, one line per {vary} you trained with the full epoch count ({shown})"
    if any(p["band"] for p in panels):
        caption += "; the shaded band of the same colour spans the reference's seeds (lowest to highest) for that value"
    if plot["diverged"]:
        caption += f"; diverged, so no line: {', '.join(num(v) for v in plot['diverged'])}"
    answers = [f"{qids}: {num(v)}" for v, qids in plot["answers"]]
    if answers:
        caption += f". The thick line, marked ◀ with the question, is your answer ({'; '.join(answers)})"
        untried = [f"{num(v)}" for v, _ in plot["answers"] if not any(same(v, w) for w, _ in panels[0]["own"])]
        if untried:
            caption += f"; you never trained {', '.join(untried)}, so it has no line"
    return Figure(png_data_uri(fig), f"your own learning curves over the {vary} sweep", caption + ".")


def _draw_panel(ax, panel: dict, plot: dict, colors: dict) -> None:
    """Bands first, then one line per value; a question's answer thick, named at its last epoch."""
    for value, low, high in panel["band"]:
        epochs = [i + 1 for i, (lo, hi) in enumerate(zip(low, high)) if lo is not None and hi is not None]
        ax.fill_between(epochs, [low[e - 1] for e in epochs], [high[e - 1] for e in epochs],
                        color=colors[value], alpha=0.18, linewidth=0)
    for value, curve in panel["own"]:
        mark = next((qids for v, qids in panel["answers"] if same(v, value)), None)
        epochs = [i + 1 for i, x in enumerate(curve) if x is not None]
        ys = [x for x in curve if x is not None]
        ax.plot(epochs, ys, "-", color=colors[value], label=num(value),
                linewidth=3.2 if mark else 1.4, marker="o" if mark else None, markersize=3.5, zorder=3 if mark else 2)
        if mark:
            ax.annotate(f"◀ {mark}", (epochs[-1], ys[-1]), xytext=(4, 0), textcoords="offset points",
                        fontsize=8, fontweight="bold", color=colors[value], va="center")
    ax.set_xlim(0.6, max((len(c) for _, c in panel["own"]), default=1) + 1.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel(panel["words"])
    ax.set_title(f"your {panel['words']}", fontsize=10)
    ax.grid(alpha=0.3)


def _colors(values: list) -> dict:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(values) - 1, 1)
    return {v: cmap(0.92 * i / n) for i, v in enumerate(values)}
