"""Hostile student text for the static reports, in every field a student controls: the folder name,
every answer, the reasons and error lines taken from their notebook, the traceback of their code.
The notebook's own report of its runs (config values, how it ran, its reason, the runs summary's note)
is hostile too. Shared by the HTML checks (test_reports_hostile.py) and the browser checks (test_reports_browser.py)."""

from __future__ import annotations

import nbformat

from evidence_fixtures import reported_run, service_run, with_runs
from fakes import GOOD_ANSWERS, fake_result

# each one tries something else: a script, an event handler out of an attribute, template injection,
# a javascript: URL, markup that would close the page's own elements
HOSTILE = [
    "<script>window.__pwned = 1; alert('script')</script>",
    "\"><img src=x onerror=\"window.__pwned = 2; alert('img')\">",
    "{{ 7*7 }} {% if true %}jinja ran{% endif %} {{ page }}",
    "javascript:window.__pwned = 3; alert('url')",
    "<a href=\"javascript:window.__pwned = 4; alert('link')\" id=\"jslink\">click me</a>",
    "' onmouseover='window.__pwned = 5' x='<svg onload=\"window.__pwned = 6; alert('svg')\"></svg>",
    "</div></section></style></title><b id=\"bold\">bold</b><iframe src=\"https://example.com/\"></iframe>",
]
JOINED = " ".join(HOSTILE)
# controls: shown as visible stand-ins, never as what they do (reorder the line, end it, cut the string)
BIDI = "right-to-left \u202eoverride\u202c and isolate \u2067text\u2069 end"
BIDI_SHOWN = "right-to-left [U+202E]override[U+202C] and isolate [U+2067]text[U+2069] end"
CONTROLS = "a NUL \x00 and a bell \x07 here"
CONTROLS_SHOWN = "a NUL \u2400 and a bell \u2407 here"
MULTILINE = "first line\nsecond line <script>window.__pwned = 7</script>\n\nlast line"

NAME = "\"><img src=x onerror=\"window.__pwned = 8\">{{ 7*7 }} \u202eeman"
NAME_SHOWN = "\"><img src=x onerror=\"window.__pwned = 8\">{{ 7*7 }} [U+202E]eman"
COPIER = "<script>window.__pwned = 9</script>copier"
# what a forged or hostile runs file of the notebook's kit may say: config values, how it ran, its reason
RUN_NOTE = HOSTILE[6] + " " + CONTROLS
RUNS_NOTE = HOSTILE[3] + " " + BIDI
RUNS_NOTE_SHOWN = HOSTILE[3] + " " + BIDI_SHOWN
LONG = ("This answer is long enough to be compared with the others, and it says " + JOINED).strip()


def hostile_answers() -> dict:
    """Every question answered with hostile text (numeric ones too: they are not numbers then)."""
    return {"ex1.a": HOSTILE[1], "ex1.b": "yes " + JOINED, "ex1.c": HOSTILE[2], "ex1.d": LONG + " " + BIDI,
            "ex2.a": HOSTILE[3], "ex2.b": CONTROLS, "ex2.c": "no " + MULTILINE, "ex2.d": LONG}


def hostile_notebook():
    """An executed notebook whose student cell raised an exception with a hostile name, message and source line."""
    nb = nbformat.v4.new_notebook()
    source = f"s = '{HOSTILE[0]}'\nraise Boom(s)"
    nb.cells = [nbformat.v4.new_code_cell(source, execution_count=1)]
    ename, evalue = "<img src=x onerror=alert('ename')>", f"{HOSTILE[0]} {HOSTILE[2]} {BIDI}"
    nb.cells[0].outputs = [nbformat.v4.new_output(
        "error", ename=ename, evalue=evalue,
        traceback=["Traceback (most recent call last)",
                   f"Cell In[1], line 2\n      1 s = '{HOSTILE[0]}'\n----> 2 raise Boom(s)\n",
                   f"{ename}: {evalue}"])]
    return nb


def hostile_results(sp, ref) -> list[dict]:
    """A graded student with hostile name, answers, feedback, override comment and notebook-reported run; one who copied them
    (so the look-alike table names both); one whose notebook failed with hostile reason and errors."""
    graded = fake_result(NAME, hostile_answers(), sp=sp, ref=ref)
    for qid, entry in graded["questions"].items():
        entry["feedback"] = f"{entry['feedback']} You wrote: {entry['answer']}"
    graded["questions"]["ex1.d"]["override"] = {"points": 1.5, "comment": "Instructor quoting you: " + HOSTILE[1]}
    hostile_run = reported_run({"lr": HOSTILE[0], "batch_size": "{{ 7*7 }}", "optimizer": HOSTILE[1]},
                               note=RUN_NOTE, epochs=HOSTILE[2], served=HOSTILE[5])
    with_runs(graded, [service_run(sp, "lr", v) for v in (0.01, 0.1, 0.3)] + [hostile_run], sp, reported_note=RUNS_NOTE)
    copier = fake_result(COPIER, {**GOOD_ANSWERS, "ex1.d": hostile_answers()["ex1.d"], "ex2.d": LONG}, sp=sp, ref=ref)
    failed = fake_result(HOSTILE[0], {}, sp=sp, ref=ref, status="error",
                         reason=f"cell 1 «s = '{HOSTILE[0]}'» raised {HOSTILE[1]} {BIDI}")
    failed["errors"] = [f"7b_ex1.json: {h}: unexpected key" for h in HOSTILE] + [CONTROLS]
    return [graded, copier, failed]
