"""Which CPU kernels torch takes on this machine: the environment that chooses them, and a name for them.

Bit-for-bit equal training needs the same kernels, not just the same code: the BLAS routine a
matmul takes (and so its order of summation) depends on the CPU, its instruction set and these
variables. The sandbox forwards KERNEL_VARS, so a notebook takes the host's paths, and the
training memo's key holds `cpu_kernel_path()`, so a memo shared across machines never answers a
run with numbers another CPU computed.
"""

from __future__ import annotations

import json
import os

# ATen's vectorised ops (default|avx2|avx512), MKL's instruction set and its reproducibility mode,
# oneDNN's instruction set: each selects other kernels on the same CPU.
KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "LABGRADER_THREADS")


def compute_env(threads: int, environ=None) -> dict[str, str]:
    """How a process computes: its thread count wherever a library reads one, the allocator's arenas and
    the kernel-choosing variables. The notebooks' kernels and the training service's process both start
    with it, so that a run the service trains computes as the notebook's own loop would."""
    return {**{name: str(threads) for name in THREAD_VARS}, "MALLOC_ARENA_MAX": "2", **kernel_env(environ)}


def kernel_env(environ=None) -> dict[str, str]:
    """The kernel-choosing variables set here (empty ones left out)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in KERNEL_VARS if environ.get(name)}


def cpu_model(cpuinfo: str | None = None) -> str:
    """'vendor / model name' of the first CPU in /proc/cpuinfo, or 'unknown cpu' where there is none."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read(64 * 1024)
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            if fields:
                break
            continue
        fields.setdefault(name.strip(), " ".join(value.split()))
    vendor = fields.get("vendor_id") or fields.get("CPU implementer") or "unknown vendor"
    model = fields.get("model name") or fields.get("CPU part") or "unknown model"
    return f"{vendor} / {model}"


def cpu_kernel_path(torch, *, cpuinfo: str | None = None, environ=None) -> str:
    """One string naming the CPU kernels torch takes here: CPU, ATen capability, MKL, kernel variables."""
    mkl = bool(torch.backends.mkl.is_available())
    return json.dumps({"cpu": cpu_model(cpuinfo), "aten": torch.backends.cpu.get_cpu_capability(),
                       "mkl": mkl, "env": kernel_env(environ)}, sort_keys=True)
