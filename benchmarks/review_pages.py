"""Server time of each `labgrader review` view for classes of 30, 300 and 3,000 synthetic students, in one run.

Each class is a graded OUT/ fabricated without executing anything (grader/review/fabricate.py: the
real validation, scoring and store): the answers to the four reviewed questions are drawn
(seed 0) from a pool of phrasings with random case changes, typos and copies, so the answers
form groups as a real class does. For each class the script times, with time.perf_counter
around in-process requests to the ASGI app (Starlette's test client, no network):
  - start: reading OUT/, re-scoring the store and grouping every reviewed question (then, as the
    command does, the loaded class is frozen out of garbage collection: grader/review/command.py),
  - each view (overview, question queue for ex1.d, student view, the queue's JSON), the median
    of --repeat requests,
  - one decision for the largest group (append + fsync + overrides.csv).
It prints the times and the growth from 300 to 3,000 students (10x the students). Goal: the
question queue for 300 students under 100 ms of server time, growth no worse than linear (<= 10x).

    .venv/bin/python benchmarks/review_pages.py [--sizes 30,300,3000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDEAS = {
    "d": ["A higher learning rate takes bigger steps so the weights change more each update.",
          "Smaller batches give more updates per epoch, so the network is updated more often.",
          "The gradient from a small batch is noisy and the noise helps escape saddle points and sharp minima.",
          "The learning rate multiplies the gradient, so a larger one makes each step longer.",
          "With small batches there are more iterations per epoch and each iteration is cheap.",
          "Stochastic noise from small batches lets the optimizer explore and escape flat regions.",
          "I don't know.", "Because it is faster.", "Momentum.", "Bigger steps."],
    "b": ["yes, the train optimum also generalizes because there is no overfitting gap",
          "no, the larger rate overfits the training set so the test optimum differs",
          "yes because the model has enough capacity and does not memorize", "no", "yes"],
    "c": ["yes, more noise regularizes and finds flatter minima",
          "no, the noise made training unstable", "yes, noise acts like a regularizer", "no", "yes"],
    "dd": ["Both add random noise to training, which regularizes the network and reduces overfitting.",
           "Dropout, batch norm and SGD noise all perturb the training and help generalization.",
           "They are all stochastic and act as regularizers.", "No idea.", "They are similar."],
}


def vary(text: str, rng: random.Random) -> str:
    """A student's own version of a phrasing: case, punctuation, a typo or two, or an exact copy."""
    roll = rng.random()
    if roll < 0.35:
        return text
    if roll < 0.55:
        return text.lower().rstrip(".!")
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(1, max(2, len(chars) - 1))
        chars[i - 1], chars[i] = chars[i], chars[i - 1]
    return "".join(chars)


def synthetic_class(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    cls = {}
    for i in range(n):
        pick = {k: vary(rng.choice(v), rng) for k, v in IDEAS.items()}
        cls[f"student{i:05d}"] = {
            "7b_ex1.json": {"a": rng.choice(["0.1", "0.2", "0.03"]), "b": pick["b"], "c": rng.choice(["32", "64", "128"]),
                            "d": pick["d"]},
            "7b_ex2.json": {"a": rng.choice(["0.1", "0.2"]), "b": rng.choice(["64", "256"]), "c": pick["c"], "d": pick["dd"]},
        }
    return cls


def median_ms(fn, repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds (the CPU of this process: on a shared machine wall time also counts waiting)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def measure(n: int, repeat: int, workdir: Path) -> dict:
    from starlette.testclient import TestClient

    from grader.review.app import make_app
    from grader.review.command import settle
    from grader.review.fabricate import graded_out
    from grader.review.security import Guard
    from grader.review.state import load_state

    t = time.perf_counter()
    out = graded_out(workdir / f"out-{n}", synthetic_class(n))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    state = load_state(out)
    settle()
    start_ms = (time.perf_counter() - t) * 1000
    guard = Guard()
    guard.hosts.add("testserver")
    client = TestClient(make_app(state, guard))
    client.cookies.set(guard.cookie, guard.token)
    student = state.order[n // 2]

    def get(path):
        def run():
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code)
        return run

    views = {
        "overview": get("/"),
        "queue ex1.d": get("/q/ex1.d"),
        "student": get(f"/s/{student}"),
        "queue JSON": get("/api/q/ex1.d"),
    }
    measured = {name: median_ms(fn, repeat) for name, fn in views.items()}
    group = state.groups["ex1.d"][0]

    def decide():
        r = client.post("/q/ex1.d/decide", data={"_csrf": guard.csrf, "group": group[0],
                                                   "version": state.version("ex1.d", group), "items": "steps"},
                        follow_redirects=False)
        assert r.status_code == 303, r.status_code
    measured["decide (largest group)"] = median_ms(decide, 1)
    return {"students": n, "build_s": round(build_s, 1), "start_ms": round(start_ms, 1),
            "groups_ex1d": len(state.groups["ex1.d"]), "largest_group": len(group),
            "ms": {k: round(v[0], 2) for k, v in measured.items()},
            "cpu_ms": {k: round(v[1], 2) for k, v in measured.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30,300,3000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sizes = [int(s) for s in args.sizes.split(",")]
    from grader.assessment.similarity import cosine_matrix

    cosine_matrix(["warm up", "the imports"])  # scikit-learn's first import is not a start-up cost per class
    rows = []
    with tempfile.TemporaryDirectory(prefix="review-bench-") as tmp:
        for n in sizes:
            rows.append(measure(n, args.repeat, Path(tmp)))
            print(f"measured {n} students", file=sys.stderr, flush=True)
    growth = {}
    by_n = {r["students"]: r for r in rows}
    if 300 in by_n and 3000 in by_n:
        growth = {k: round(by_n[3000]["cpu_ms"][k] / max(by_n[300]["cpu_ms"][k], 1e-3), 2) for k in by_n[300]["cpu_ms"]}
        growth["start (wall)"] = round(by_n[3000]["start_ms"] / by_n[300]["start_ms"], 2)
    figures = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus (CPU only, in-process ASGI)",
               "data": "synthetic students (seed 0), fabricated graded OUT/, nothing executed",
               "repeat": args.repeat, "rows": rows, "growth_300_to_3000": growth}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"labgrader review: server time per view, wall / CPU ms ({figures['machine']}; {figures['data']}; "
          f"median of {args.repeat})")
    names = list(rows[0]["ms"])
    print(f"{'students':>8} {'groups':>6} {'start':>9} " + " ".join(f"{n:>24}" for n in names))
    for r in rows:
        print(f"{r['students']:>8} {r['groups_ex1d']:>6} {r['start_ms']:>7.0f}ms "
              + " ".join(f"{r['ms'][n]:>11.1f} / {r['cpu_ms'][n]:>7.1f}ms" for n in names))
    if growth:
        print("growth 300 -> 3000 students (10x), CPU time: " + ", ".join(f"{k} {v}x" for k, v in growth.items()))
        q, qc = by_n[300]["ms"]["queue ex1.d"], by_n[300]["cpu_ms"]["queue ex1.d"]
        print(f"goal: queue for 300 students < 100 ms: {q:.1f} ms wall, {qc:.1f} ms CPU: {'met' if qc < 100 else 'NOT met'} (CPU); "
              f"growth <= 10x: {'met' if growth['queue ex1.d'] <= 10 else 'NOT met'} ({growth['queue ex1.d']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
