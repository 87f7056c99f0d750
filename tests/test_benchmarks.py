"""Smoke runs of the benchmark scripts: they run to the end and print what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_json(tmp_path: Path, script: str, *args: str, timeout: int = 1800) -> tuple[dict, subprocess.CompletedProcess]:
    """benchmarks/SCRIPT ARGS --json FILE, which must succeed; -> (the figures it wrote, the finished run)."""
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(out.read_text()), run


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_grading_quick():
    """A 3-student class graded with and without the training service, then again from the memo the service
    filled (nothing trained): times, the machine's CPU seconds, identical statuses and answers."""
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
    assert wall["class_warm"] > 0 and not figures["warm_differences"], figures["warm_differences"]
    assert figures["warm_served"] == {"trained": 0, "from_memo": 15, "joined": 0}
    for key in ("class_without", "class_with", "class_warm", "one_without", "one_with"):
        cpu = figures["cpu"][key]
        assert cpu["cpu_s"] > 0 and 0 < cpu["busy"] <= 1, (key, cpu)
    assert figures["warm_cpu_s_per_notebook"] == pytest.approx(figures["cpu"]["class_warm"]["cpu_s"] / 3, abs=0.01)


@pytest.mark.slow
@pytest.mark.sandbox
def test_class_grading_one_notebook_repeated_reports_medians():
    """--one-only --one-repeats 2: the one notebook twice each way, the medians and their ratio, no class run."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "class_grading.py"), "--quick", "--students", "1",
                          "--one-only", "--one-repeats", "2", "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout)
    walls = figures["one_wall_s"]
    assert len(walls["without"]) == len(walls["with"]) == 2 and figures["one_only"]
    assert figures["wall_s"]["one_with"] == pytest.approx(sum(walls["with"]) / 2, abs=0.002)
    assert figures["ratios"]["one_with_over_one_without"] == pytest.approx(
        figures["wall_s"]["one_with"] / figures["wall_s"]["one_without"], abs=0.002)
    assert "class without" not in run.stderr


@pytest.mark.slow
def test_watchdog_cost_times_an_epoch_alone_and_watched(tmp_path):
    figures, run = run_json(tmp_path, "watchdog_cost.py", "--train", "2000", "--test", "500", "--repeats", "2")
    assert len(figures["alone_s"]) == len(figures["watched_s"]) == 2 and figures["data"]["n_train"] == 2000
    assert figures["ratio"] == pytest.approx(figures["watched_median_s"] / figures["alone_median_s"], abs=0.002)
    assert all(n >= 1 for n in figures["watchdog_samples"]) and 0 <= figures["watchdog_cpu_share"] < 1
    assert "watched / alone:" in run.stdout


@pytest.mark.slow
def test_sweep_speed_full_grid_times_both_ways_on_a_tiny_set(tmp_path):
    """The full-grid mode runs to the end on the CPU: batched, the sampled per-run loop, their ratio, the JSON."""
    figures, run = run_json(tmp_path, "sweep_speed.py", "--device", "cpu", "--train", "600", "--test", "100", "--full-grid",
                            "--skip-slice", "--epochs", "1", "--seeds", "2")
    assert figures["device"] == "cpu" and figures["grid_runs"] == 38 and figures["batched_s"] > 0
    assert figures["loop_s"] > 0 and figures["speedup"] > 0
    assert "scaled x2 to 38 runs x 1 epochs" in run.stdout and "speed-up batched" in run.stdout


@pytest.mark.slow
def test_service_gpu_times_a_group_on_each_device_named(tmp_path):
    figures, run = run_json(tmp_path, "service_gpu.py", "--devices", "cpu", "--requests", "2", "--epochs", "1", "--train",
                            "600", "--test", "100")
    assert figures["devices"]["cpu"]["batches"] == 1 and figures["devices"]["cpu"]["group_s"] > 0
    assert "group of 2 in 1 batch(es)" in run.stdout


@pytest.mark.slow
def test_data_cache_times_both_ways_on_a_tiny_set(tmp_path):
    figures, run = run_json(tmp_path, "data_cache.py", "--train", "600", "--test", "100", "--repeats", "1")
    assert figures["data"] == {**figures["data"], "kind": "synthetic", "n_train": 600, "n_test": 100}
    assert figures["get_data_gzip_s"] > 0 and figures["get_data_cache_s"] > 0
    assert figures["matplotlib_import_fresh_s"] > 0 and figures["matplotlib_import_seeded_s"] > 0
    assert "get_data:" in run.stdout and "import matplotlib.pyplot" in run.stdout
