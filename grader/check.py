"""`labgrader check`: a student's self-check of a notebook, an answer file or a folder.

Says for each question whether the answer is valid and right, partly right, wrong, awaiting
review or not answered, never the expected value unless --reveal. Checking JSON files stays
cheap: torch, nbclient and pandas are imported only when a notebook has to run.
Exit codes: 0 every file valid; 1 some file invalid (or the notebook failed); 2 usage or I/O.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from grader.common.errors import UserError
from grader.assessment.score import VERDICT_WORDS
from grader.assessment.validate import parse_answers, read_answer_file, validate_answers

PLAIN_VERDICTS = ("Your answer is right:", "Your answer is wrong:")


def check_command(args) -> int:
    from reference.spec import load_spec

    spec = load_spec(getattr(args, "spec", None))
    path = Path(args.path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir() and not path.is_symlink():
        targets = {name: _existing(path / name) for name in spec.answer_files}
        if not any(targets.values()):
            raise UserError(f"{path}: holds no answer files ({', '.join(spec.answer_files)}); "
                            "run the notebook first, or check the .ipynb")
    elif path.suffix == ".ipynb":
        if getattr(args, "no_execute", False):
            targets = {name: _existing(path.parent / name) for name in spec.answer_files}
        else:
            return _check_notebook(args, spec, path)
    elif path.suffix == ".json":
        targets = {_answer_name(path, spec): path}
    else:
        raise UserError(f"{path}: not a notebook (.ipynb), an answer file (.json) or a folder")
    return _report(args, spec, targets, None)


def _check_notebook(args, spec, notebook: Path) -> int:
    """Run the notebook in the sandbox as `grade` would, then check the answer files it wrote."""
    import tempfile

    from grader.execution.execute import execute_notebook, prepare_workdir
    from grader.grading.pipeline import exec_reason, resolve_data_dir
    from grader.execution.limits import limits_from_args

    data_dir, source = resolve_data_dir(args)
    print(f"labgrader: running {notebook.name} (data: {data_dir}, from {source}); this takes as long as the notebook does",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="labgrader-check-") as tmp:
        workdir = Path(tmp) / "work"
        workdir.mkdir()
        nb = prepare_workdir(notebook, workdir, answer_files=spec.answer_files)
        result = execute_notebook(nb, workdir, limits=limits_from_args(args), data_dir=data_dir,
                                  preamble=spec.preamble, sandbox=not getattr(args, "no_sandbox", False), slot=0, seed=0)
        get = (lambda k: result.get(k)) if isinstance(result, dict) else (lambda k: getattr(result, k, None))
        execution = {"status": get("status"), "reason": exec_reason(result), "cell": get("cell"),
                     "duration_s": get("duration_s")}
        targets = {name: _existing(workdir / name) for name in spec.answer_files}
        return _report(args, spec, targets, execution)


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


def check_files(spec, ref, targets: dict[str, Path | None], *, reveal: bool) -> list[dict]:
    """Each target file: found, valid, every problem, and each of its questions judged."""
    from grader.assessment.score import score_question

    out = []
    for name, path in targets.items():
        entry = {"file": name, "path": str(path) if path else None, "found": path is not None,
                 "readable": False, "valid": True, "errors": [], "questions": []}
        answers, absent = None, f"{name} was not written" if path is None else None
        if path is not None:
            try:
                data = read_answer_file(path)
            except UserError as e:
                if e.exit_code != 1:
                    raise
                entry.update(valid=False, errors=[str(e)])
                absent = f"{name} could not be read"
            else:
                entry["errors"] = validate_answers(name, data)
                entry["valid"] = not entry["errors"]
                answers = parse_answers(name, data)
                entry["readable"] = True
        for q in spec.questions_in(name):
            answer = answers.get(q.key) if answers else None
            scored = score_question(q, answer, ref.question(q.id), spec=spec, provenance=ref.provenance,
                                    hide=not reveal, absent=absent)
            label = "invalid" if answer is not None and answer.error else VERDICT_WORDS[scored["verdict"]]
            if q.kind == "yesno" and scored["review"]:
                label += ", reason needs review"
            item = {"id": q.id, "key": q.key, "label": label, **{k: scored[k] for k in
                    ("verdict", "points", "max", "review", "feedback")}}
            if reveal:
                item["expected"] = scored["expected"]
            entry["questions"].append(item)
        out.append(entry)
    return out


def _report(args, spec, targets: dict[str, Path | None], execution: dict | None) -> int:
    from grader.assessment.reference_io import reference_for

    ref = reference_for(getattr(args, "reference", None), spec, lambda line: print(f"labgrader: {line}", file=sys.stderr),
                        check_runs=False)
    reveal = bool(getattr(args, "reveal", False))
    files = check_files(spec, ref, targets, reveal=reveal)
    failed_run = execution is not None and execution["status"] != "ok"
    wrote_nothing = execution is not None and not any(f["found"] for f in files)
    valid = all(f["valid"] for f in files) and not failed_run and not wrote_nothing
    total = sum(q["points"] for f in files for q in f["questions"])
    most = sum(q["max"] for f in files for q in f["questions"])
    review = any(q["review"] for f in files for q in f["questions"])
    if getattr(args, "json", False):
        print(json.dumps({"valid": valid, "execution": execution, "files": files, "total": round(total, 6),
                          "max": round(most, 6), "provisional": review, "reference": ref.summary()}, indent=2))
    else:
        _print_text(files, execution, total, most, review, reveal, wrote_nothing)
    return 0 if valid else 1


def _print_text(files, execution, total, most, review, reveal, wrote_nothing) -> None:
    if execution is not None:
        line = f"notebook: {execution['status']}"
        if execution["status"] != "ok" and execution["reason"]:
            line += f": {execution['reason']}"
        print(line)
        if wrote_nothing:
            print("notebook: wrote no answer files")
    for f in files:
        if not f["found"]:
            print(f"{f['file']}: not written (its questions count as not answered)")
            continue
        problems = len(f["errors"])
        print(f"{f['file']}: " + ("valid" if f["valid"] else f"invalid ({problems} problem{'s' if problems != 1 else ''})"))
        for e in f["errors"]:
            print(f"  {e}")
        if not f["readable"]:
            continue
        width = max((len(q["label"]) for q in f["questions"]), default=0)
        for q in f["questions"]:
            print(f"  {q['key']}  {q['label'].ljust(width)}  {q['points']:g}/{q['max']:g}")
            if reveal or not (q["verdict"] == "missing" or q["feedback"].startswith(PLAIN_VERDICTS)):
                print(f"     {q['feedback']}")
    note = " (provisional: answers marked 'needs review' are read by an instructor)" if review else ""
    print(f"score: {total:g} of {most:g} points{note}")
