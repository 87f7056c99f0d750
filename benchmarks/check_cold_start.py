"""Cold start of a student's self-check: `python -m grader check 7b_ex1.json` vs `python -c pass`.

Self-check must feel instant (goal: under 0.3 s in all), so checking a JSON file must not load
torch, nbclient or pandas. Each command runs in a fresh interpreter, several times; the median
and the best are printed side by side, with the ratio. Run: python benchmarks/check_cold_start.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.3


def timed(argv: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if run.returncode not in (0, 1):
            sys.exit(f"benchmark: {' '.join(argv)} failed ({run.returncode}): {run.stderr.strip()}")
    return times


def reference_for(tmp: Path, given: str | None) -> list[str]:
    """--reference REF when given or when the bundled demo is missing (a small hand-made one)."""
    if given:
        return ["--reference", given]
    from grader.assessment.reference_io import DEMO_REFERENCE

    if DEMO_REFERENCE.is_file():
        return []
    sys.path.insert(0, str(ROOT / "tests"))
    from grader_fixtures import write_artifact

    return ["--reference", str(write_artifact(tmp / "reference.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per command (default: 15)")
    parser.add_argument("--reference", help="reference artifact (default: the bundled demo, else a hand-made one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        answers = tmp / "7b_ex1.json"
        answers.write_text(json.dumps({"a": "0.1", "b": "no, it overfits", "c": "128", "d": ""}))
        check = [sys.executable, "-m", "grader", "check", str(answers), *reference_for(tmp, args.reference)]
        bare = [sys.executable, "-c", "pass"]
        timed(check, 2)
        rows = [("python -c pass", timed(bare, args.repeat)), ("python -m grader check x.json", timed(check, args.repeat))]
    print(f"{'command':32}  {'median s':>9}  {'best s':>7}")
    for name, t in rows:
        print(f"{name:32}  {statistics.median(t):9.3f}  {min(t):7.3f}")
    base, check_t = statistics.median(rows[0][1]), statistics.median(rows[1][1])
    verdict = "within" if check_t < GOAL_S else "OVER"
    print(f"ratio check / bare interpreter: {check_t / base:.1f}x; check median {check_t:.3f} s is {verdict} the {GOAL_S} s goal")


if __name__ == "__main__":
    main()
