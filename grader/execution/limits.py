"""Execution limits for one submission, each declared once with its type, default and help.

The CLI builds its flags from these fields, so a limit's default and help live only here.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field, fields


def _opt(default, help: str, flag: str | None = None, metavar: str | None = None):
    return field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar})


@dataclass(frozen=True)
class Limits:
    timeout: float = _opt(900.0, "wall-clock seconds for the whole notebook", "--timeout", "S")
    cell_timeout: float = _opt(600.0, "wall-clock seconds for one cell", "--cell-timeout", "S")
    memory_mb: int = _opt(4096, "memory of all the notebook's processes together, its /tmp included, in MiB "
                          "(each process's address space, RLIMIT_AS, too)", "--memory", "MB")
    processes: int = _opt(256, "processes and threads the notebook may run at once", "--processes", "N")
    file_size_mb: int = _opt(256, "largest file the notebook may write, in MiB", "--file-size", "MB")
    disk_mb: int = _opt(1024, "bytes the notebook may keep in its work dir, in MiB (the disk cap)", "--disk", "MB")
    disk_files: int = _opt(20000, "files and folders the notebook may keep in its work dir (the disk cap)",
                           "--disk-files", "N")
    output_kb: int = _opt(1024, "captured output kept per cell, in KiB (the rest is cut)", "--output-cap", "KB")
    cpu_seconds: int = _opt(3600, "CPU seconds for the kernel (RLIMIT_CPU)", "--cpu-time", "S")
    train_runs: int = _opt(200, "training runs one notebook may ask the training service for", "--train-runs", "N")
    train_epochs: int = _opt(2000, "epochs, summed over its runs, one notebook may ask the training service for; "
                             "a batch below 128 or a layer over 512 units counts proportionally more", "--train-epochs", "N")
    train_seconds: float = _opt(600.0, "seconds of training one notebook may take in the training service",
                                "--train-time", "S")
    train_memory_mb: int = _opt(1024, "memory one training request may take in the training service, in MiB "
                                "(checked before training)", "--train-memory", "MB")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def positive(kind: type):
    """An argparse type: a finite number above zero, so a limit of 0, -1 or nan is a usage error,
    not a notebook that "ran longer than its -1 s"."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}")
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def add_limit_flags(parser) -> None:
    """Declare one CLI flag per Limits field, with the field's default and help."""
    group = parser.add_argument_group("execution limits")
    for f in fields(Limits):
        group.add_argument(f.metadata["flag"], dest=f"limit_{f.name}", type=positive(type(f.default)), default=f.default,
                           metavar=f.metadata["metavar"], help=f"{f.metadata['help']} (default: {f.default:g})")


def limits_from_args(args) -> Limits:
    return Limits(**{f.name: getattr(args, f"limit_{f.name}") for f in fields(Limits)})


def notebook_threads(parallel: int, environ=None) -> int:
    """Threads for each of `parallel` notebooks run at once on this machine (and for the training
    service, which must match them): the cores shared out, at most $OMP_NUM_THREADS where it is set."""
    environ = os.environ if environ is None else environ
    threads = max(1, (os.cpu_count() or 1) // max(1, parallel))
    cap = environ.get("OMP_NUM_THREADS", "").strip()
    return min(threads, int(cap)) if cap.isdigit() and int(cap) >= 1 else threads


SERVICE_TRAINERS = 2


def service_trainers(parallel: int, environ=None) -> tuple[int, int]:
    """-> (threads per trainer, trainers) for the training service beside `parallel` notebooks. Each
    trainer has every core (the notebooks wait while it trains; its numbers and memo stay the same at any
    -j), and up to SERVICE_TRAINERS train at once when that many notebooks can wait: two runs side by side
    trained about 1.3x as much per second as the same two taking turns on 2 cores (benchmarks/RESULTS.md);
    more at once were not measured."""
    return notebook_threads(1, environ), max(1, min(max(1, parallel), SERVICE_TRAINERS))
