"""A graded OUT/ made from answer files directly, without executing anything: for tests, the benchmark, demos.

Each student's answers go through the real validation and scoring and into the real store, so the
folder is what `labgrader grade --no-execute` would leave (without per-student feedback files).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from grader import __version__
from grader.assessment.score import score_answers
from grader.assessment.validate import parse_answers, validate_answers
from grader.common.names import display, exact_hex, file_stem
from grader.grading.pipeline import decide_status, stored_answers
from grader.grading.store import Store
from grader.reports import report


def graded_out(out: str | Path, answers: dict[str, dict[str, dict]], *, spec=None, ref=None,
               executed: dict[str, str] | None = None, runs: dict[str, list] | None = None) -> Path:
    """answers: student -> {answer file name: {key: raw answer}}; executed: student -> notebook JSON text;
    runs: student -> the service's runs record (grader/assessment/runs.py), as if a training service made them."""
    from grader.assessment.runs import runs_record
    from grader.assessment.reference_io import load_reference
    from reference.spec import load_spec

    spec = spec or load_spec()
    ref = ref or load_reference(None, check_runs=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out)
    options = {"fabricated": True}
    results = []
    for student, files_raw in answers.items():
        files, problems = {}, []
        for name in spec.answer_files:
            data = files_raw.get(name)
            if isinstance(data, dict):
                problems += validate_answers(name, data)
                files[name] = parse_answers(name, data)
            else:
                files[name] = None
        status, reason = decide_status(None, files, problems, no_execute=True)
        record, summary = runs_record(runs[student], None) if runs and student in runs else (None, None)
        scored = score_answers(spec, ref, files, runs=record, evidence_source=(summary or {}).get("evidence"))
        content = hashlib.sha256(json.dumps(files_raw, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()
        rel = None
        if executed and student in executed:
            rel = f"executed/{file_stem(student)}.ipynb"
            (out / "executed").mkdir(exist_ok=True)
            (out / rel).write_text(executed[student], encoding="utf-8")
        raw = exact_hex(student)  # named as grade names them: shown valid, exact bytes in hex, a unique file stem
        result = {"student": display(student), **({"student_hex": raw} if raw else {}), "file": file_stem(student),
                  "status": status, "reason": reason, "total": scored["total"],
                  "max": scored["max"], "questions": scored["questions"], "review": scored["review"],
                  "content_sha256": content, "executed": rel, "duration_s": 0.0, "errors": problems,
                  "answer_files": stored_answers(files)}
        if summary is not None:
            result["runs"], result["runs_summary"] = record, summary
        store.save(student, content, options, result)
        results.append(result)
    header = {"assignment": spec.assignment_id, "title": spec.title, "spec_sha256": spec.sha256, "spec": str(spec.path),
              "reference": ref.summary(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "labgrader_version": __version__, "max": spec.max_points,
              "options": {"no_execute": True, "hide_answers": False, "sandbox": False}}
    report.write_outputs(out, header, results, spec)
    return out
