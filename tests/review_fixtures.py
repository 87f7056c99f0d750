"""A small graded OUT/ for the review tests, made without executing anything, and a logged-in test client."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grader.review.fabricate import graded_out

DATA = Path(__file__).with_name("data")
HOSTILE_NAME = '<img src=x onerror=alert(1)>\u202egnp.exe'
GOOD = "A higher learning rate takes bigger steps so the weights change more each update, and small batches add gradient noise."
NOTEBOOK = json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "print(1)", "execution_count": 1,
                                  "outputs": [{"output_type": "display_data", "metadata": {},
                                               "data": {"text/html": "<script>parent.alert('nb')</script><b>hi</b>"}}]}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def answers(d: str, *, b: str = "yes, the gap is overfitting of the training set", c: str = "yes, noise regularizes") -> dict:
    return {"7b_ex1.json": {"a": "0.1", "b": b, "c": "64", "d": d},
            "7b_ex2.json": {"a": "0.1", "b": "64", "c": c, "d": "noise regularizes like dropout and is random"}}


def ex1d_class() -> dict[str, str]:
    return json.loads((DATA / "ex1d_answers.json").read_text(encoding="utf-8"))["answers"]


def small_class(out: Path, *, hostile: bool = True) -> Path:
    """Six students: three identical ex1.d answers (one in other case), a similar one, two others."""
    cls = {
        "ann": answers(GOOD),
        "bob": answers(GOOD),
        "cid": answers(GOOD.upper()),
        "dan": answers(GOOD.replace("weights", "wieghts").replace("gradient", "gradiant")),
        "eve": answers("i dont know", b="no"),
        "fay": answers("Momentum makes it faster because momentum is fast.", b="no, overfitting of the train set"),
    }
    if hostile:
        cls[HOSTILE_NAME] = answers("<script>alert('x')</script>")
    return graded_out(out, cls, executed={"ann": NOTEBOOK})


def login(client, guard):
    r = client.get(f"/?token={guard.token}", follow_redirects=False)
    assert r.status_code == 303 and guard.cookie in r.headers["set-cookie"]
    return client


def versions(html: str) -> dict[str, str]:
    """group key -> version, from a queue page's decide forms."""
    found = re.findall(r'name="group" value="([^"]*)">\s*<input type="hidden" name="version" value="(\w+)"', html)
    import html as h

    from urllib.parse import unquote

    return {unquote(h.unescape(k)): v for k, v in found}
