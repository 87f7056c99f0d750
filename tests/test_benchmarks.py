"""Smoke runs of the benchmark scripts: they run to the end and print what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_grading_quick():
    """A 3-student class graded with and without the training service: times and identical statuses."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "class_grading.py"), "--quick", "--students", "3",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout)
    wall = figures["wall_s"]
    assert wall["class_without"] > 0 and wall["class_with"] > 0
    assert wall["one_without"] > 0 and wall["one_with"] > 0
    assert figures["students"] == 3
    assert figures["statuses_identical"], figures["status_differences"]
    assert figures["statuses"]["without"] == figures["statuses"]["with"] == {"graded": 3}
    assert not figures["answer_differences"], figures["answer_differences"]
