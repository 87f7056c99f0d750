"""`labgrader check`: a student's self-check of a notebook, an answer file or a folder.

Without --reference it never says right or wrong, nor gives points, for a question the course's
reference decides (an optimum or a yes/no: on a grid of 9 values such an oracle gives the answer away):
each answer is valid, invalid or not answered, and, when the notebook ran, consistent or not with the
student's own runs as the lab kit reported them. --reference REF (a practice mode an instructor
hands out) scores every question as `grade` does, never the expected value unless --reveal.
Checking JSON files stays cheap: torch, nbclient and pandas are imported only when a notebook runs.
Exit codes: 0 every file valid; 1 some file invalid (or the notebook failed); 2 usage or I/O.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from grader.common.errors import UserError

NOTHING_TO_REVEAL = ("--reveal: there is nothing to reveal without the course's reference; "
                     "pass --reference REF if your course handed one out")
NO_BWRAP_NOTE = "bubblewrap is not installed: running your notebook without a sandbox (it is your own code)"


def check_command(args) -> int:
    from reference.spec import load_spec

    if getattr(args, "reveal", False) and not getattr(args, "reference", None):
        raise UserError(NOTHING_TO_REVEAL)
    spec = load_spec(getattr(args, "spec", None))
    path = Path(args.path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir() and not path.is_symlink() and path.suffix not in (".ipynb", ".json"):
        targets = _beside(path, spec, f"{path}: holds no answer files ({', '.join(spec.answer_files)}); "
                                      "run the notebook first, or check the .ipynb")
        alone = "folder"
    elif path.suffix == ".ipynb":
        if not path.is_file():
            raise UserError(f"{path}: is not a file; give the notebook's .ipynb file", 1)
        if not getattr(args, "no_execute", False):
            return _check_notebook(args, spec, path)
        targets = _beside(path.parent, spec, f"{path}: no answer files beside it ({', '.join(spec.answer_files)}); "
                                             "run the notebook first, or check it without --no-execute")
        alone = "folder"
    elif path.suffix == ".json":
        targets = {_answer_name(path, spec): path}
        alone = "file"
    else:
        raise UserError(f"{path}: not a notebook (.ipynb), an answer file (.json) or a folder")
    from grader.checking.own_runs import no_runs_view

    return _report(args, spec, targets, None, no_runs_view(alone), None)


def _check_notebook(args, spec, notebook: Path) -> int:
    """Run the notebook as `grade` would (in the sandbox where there is one), then check the answer files
    it wrote against the runs the kit reported."""
    import tempfile

    from grader.checking.own_runs import runs_view
    from grader.execution.execute import execute_notebook, prepare_workdir
    from grader.execution.limits import limits_from_args
    from grader.grading.pipeline import checked_data_dir, exec_reason

    data_dir, source = checked_data_dir(args)
    sandbox = _sandbox(args)
    print(f"labgrader: running {notebook.name} (data: {data_dir}, from {source}); this takes as long as the notebook does",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="labgrader-check-") as tmp:
        workdir = Path(tmp) / "work"
        workdir.mkdir()
        nb = prepare_workdir(notebook, workdir, answer_files=spec.answer_files)
        extra = {} if sandbox or getattr(args, "no_sandbox", False) else {"warn_unsandboxed": False}
        result = execute_notebook(nb, workdir, limits=limits_from_args(args), data_dir=data_dir,
                                  preamble=spec.preamble, sandbox=sandbox, slot=0, seed=0, **extra)
        get = (lambda k: result.get(k)) if isinstance(result, dict) else (lambda k: getattr(result, k, None))
        execution = {"status": get("status"), "reason": exec_reason(result), "cell": get("cell"),
                     "duration_s": get("duration_s")}
        runs, counted = runs_view(spec, get("reported_runs"))
        targets = {name: _existing(workdir / name) for name in spec.answer_files}
        return _report(args, spec, targets, execution, runs, counted)


def _sandbox(args) -> bool:
    """Sandboxed unless --no-sandbox; where the sandbox cannot start, unsandboxed with a one-line note:
    `check` runs the student's own code on the student's own machine (`grade` refuses instead)."""
    if getattr(args, "no_sandbox", False):
        return False
    from grader.execution.sandbox import NO_BWRAP, sandbox_problem

    problem = sandbox_problem()
    if problem is None:
        return True
    if problem == NO_BWRAP:
        note = NO_BWRAP_NOTE
    else:
        why = re.sub(r"(;? ?fix it)? ?\(?or pass --no-sandbox\)?$", "", problem).rstrip(" ;,")
        note = f"the sandbox cannot start here ({why}): running your notebook without it (it is your own code)"
    print(f"labgrader: {note}", file=sys.stderr)
    return False


def _beside(folder: Path, spec, nothing: str) -> dict[str, Path | None]:
    """The answer files in a folder; none at all is nothing to check (exit 2), not an invalid answer."""
    targets = {name: _existing(folder / name) for name in spec.answer_files}
    if not any(targets.values()):
        raise UserError(nothing)
    return targets


def _existing(path: Path) -> Path | None:
    return path if path.exists() or path.is_symlink() else None


def _answer_name(path: Path, spec) -> str:
    """Which answer file a JSON file is, by name; a browser's "7b_ex1 (1).json" still counts."""
    if path.name in spec.answer_files:
        return path.name
    for name in spec.answer_files:
        if re.fullmatch(re.escape(Path(name).stem) + r"[\s_-]*(\(\d+\))?\.json", path.name):
            return name
    raise UserError(f"{path}: not an answer file of lab {spec.assignment_id} (expected {' or '.join(spec.answer_files)})")


def _report(args, spec, targets: dict[str, Path | None], execution: dict | None, runs: dict, counted: dict | None) -> int:
    from grader.checking import files as checking
    from grader.checking.render import print_text

    reveal = bool(getattr(args, "reveal", False))
    if getattr(args, "reference", None):
        from grader.assessment.reference_io import reference_for

        ref = reference_for(args.reference, spec, lambda line: print(f"labgrader: {line}", file=sys.stderr),
                            check_runs=False)
        files = checking.reference_files(spec, ref, targets, reveal=reveal, counted=counted)
        questions = [q for f in files for q in f["questions"]]
        extra = {"total": round(sum(q["points"] for q in questions), 6), "max": round(sum(q["max"] for q in questions), 6),
                 "provisional": any(q["review"] for q in questions), "reference": ref.summary()}
    else:
        files = checking.self_files(spec, targets, counted=counted)
        extra = {"points": _points(files), "reference": None}
    failed_run = execution is not None and execution["status"] != "ok"
    wrote_nothing = execution is not None and not any(f["found"] for f in files)
    valid = all(f["valid"] for f in files) and not failed_run and not wrote_nothing
    doc = {"valid": valid, "execution": execution, "runs": runs, "files": files, **extra}
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
    else:
        print_text(doc, reveal=reveal)
    return 0 if valid else 1


def _points(files: list[dict]) -> dict:
    """What decides the points without a reference: the reference (no total), or the rubric (provisional)."""
    questions = [q for f in files for q in f["questions"]]
    decided = [q for q in questions if q["decided_by"] == "reference"]
    text = [q for q in questions if q["decided_by"] == "rubric"]
    return {"reference": {"questions": [q["id"] for q in decided], "max": round(sum(q["max"] for q in decided), 6)},
            "free_text": {"questions": [q["id"] for q in text], "points": round(sum(q["points"] for q in text), 6),
                          "max": round(sum(q["max"] for q in text), 6), "provisional": True}}
