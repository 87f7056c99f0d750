"""The bubblewrap command line for one submission: namespaces, binds, uid drop, rlimits.

A notebook is untrusted code. Inside the sandbox it sees a read-only system, this Python,
the labgrader packages (without the bundled demo's answers), the data read-only at /data
(and the grader's decoded copy of it at /data-decoded), and its own work dir, the only place it can write. It has no network (its own loopback
carries nbclient's traffic to the kernel, both inside), runs as an unprivileged uid of its
own worker slot, and is held to the limits of `Limits` by rlimits.

Nothing here starts a notebook: execute.py runs the command and reads what the runner wrote.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

from grader.common.errors import UserError
from grader.common.kernels import compute_env
from grader.execution.limits import Limits
from reference.datacache import KIT_ENV
from reference.kit_report import RUNS_ENV

WORKDIR = PurePosixPath("/home/student")
DATADIR = PurePosixPath("/data")
DATACACHE = PurePosixPath("/data-decoded")
TRAIN_SOCKET = PurePosixPath("/run/labgrader/train.sock")
STATE = ".labgrader"
RUNS_FILE = "runs.jsonl"
MPL_DIR = "matplotlib"
UID_BASE = 61000
MIB = 1 << 20
CPU_GRACE_S = 5

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone",
             "nsswitch.conf", "hosts", "host.conf", "mime.types", "os-release", "fonts")
HIDDEN_IN_PACKAGES = {"reference": ("demo", "specs")}  # expected answers and rubric keywords
NO_BWRAP = "bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: apt install bubblewrap) or pass --no-sandbox to run notebooks unsandboxed"


def uid_for_slot(slot: int) -> int:
    """One uid per parallel worker, because RLIMIT_NPROC counts every process of a uid."""
    if slot < 0:
        raise ValueError(f"slot must be non-negative, got {slot}")
    return UID_BASE + slot


def privileged() -> bool:
    """Only root can bind what it likes and then drop to another uid (SANDBOX-NOTES)."""
    return os.geteuid() == 0


def runner_argv(job: str | PurePosixPath) -> list[str]:
    """The runner, isolated (-I) so a student's `nbclient.py` in the work dir cannot replace it."""
    return [sys.executable, "-I", "-B", "-m", "grader.execution.runner", str(job)]


def rlimit_argv(limits: Limits) -> list[str]:
    """prlimit prefix; soft = hard, so the notebook cannot raise them again. [] without prlimit.

    CPU time alone has a higher hard limit: at the soft one the kernel gets SIGXCPU, which the
    runner can tell from other deaths; SIGKILL follows at the hard one.
    """
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return []
    return [prlimit, f"--nproc={limits.processes}", f"--as={limits.memory_mb * MIB}",
            f"--fsize={limits.file_size_mb * MIB}", f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + CPU_GRACE_S}", "--core=0", "--"]


def drop_argv(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]


def runner_env(*, home: str | os.PathLike, data: str | os.PathLike | None, threads: int, seed: int,
               tmp: str | os.PathLike = "/tmp", train_socket: str | os.PathLike | None = None,
               data_cache: str | os.PathLike | None = None) -> dict[str, str]:
    """The runner's and kernel's whole environment, built from nothing so no host secret leaks in.

    Only the variables that choose CPU kernels (KERNEL_VARS) come from the host, so a notebook takes
    the kernel paths the training service takes (grader.common.kernels.compute_env, for both).
    """
    home = str(home)
    state = f"{home}/{STATE}"
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "TMPDIR": str(tmp), "PYTHONHASHSEED": str(seed), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
        "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{state}/{MPL_DIR}", "IPYTHONDIR": f"{state}/ipython",
        "XDG_CACHE_HOME": f"{state}/cache", "XDG_CONFIG_HOME": f"{state}/config",
        "JUPYTER_CONFIG_DIR": f"{state}/jupyter-config", "JUPYTER_DATA_DIR": f"{state}/jupyter",
        "JUPYTER_PATH": f"{state}/jupyter", "JUPYTER_RUNTIME_DIR": f"{state}/runtime", "JUPYTER_PLATFORM_DIRS": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    env.update(compute_env(threads))
    env[RUNS_ENV] = f"{state}/{RUNS_FILE}"
    if data is not None:
        env["LABGRADER_DATA"] = str(data)
    if train_socket is not None:
        env["LABGRADER_TRAIN_SOCKET"] = str(train_socket)
    if data_cache is not None:
        env[KIT_ENV] = str(data_cache)
    return env


def package_dirs() -> dict[str, Path]:
    """Where `grader` and `reference` live (an editable install points into the checkout)."""
    dirs = {}
    for name in ("grader", "reference"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"cannot find the {name} package to show inside the sandbox; reinstall labgrader")
        dirs[name] = Path(list(spec.submodule_search_locations)[0]).resolve()
    return dirs


def python_roots() -> list[Path]:
    """This interpreter's prefixes (venv and the Python it was made from), outermost first."""
    roots = []
    for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        for q in (Path(p), Path(p).resolve()):
            if q not in roots:
                roots.append(q)
    return sorted(roots, key=lambda q: len(q.parts))


class _Binds:
    """bwrap mount arguments in order; parents of a mount point are made 0755 (bwrap's own are 0700)."""

    def __init__(self):
        self.args: list[str] = []
        self.made: set[PurePosixPath] = {PurePosixPath("/")}
        self.bound: list[PurePosixPath] = []

    def covered(self, path: PurePosixPath) -> bool:
        return any(path == b or b in path.parents for b in self.bound)

    def parents(self, dest: PurePosixPath) -> None:
        for parent in reversed(dest.parents):
            if parent not in self.made and not self.covered(parent):
                self.args += ["--perms", "0755", "--dir", str(parent)]
                self.made.add(parent)

    def ro(self, src: Path, dest: PurePosixPath | None = None, flag: str = "--ro-bind") -> None:
        dest = PurePosixPath(dest or src)
        if self.covered(dest):
            return
        self.parents(dest)
        self.args += [flag, str(src), str(dest)]
        self.bound.append(dest)

    def rw(self, src: Path, dest: PurePosixPath) -> None:
        self.ro(src, dest, flag="--bind")

    def symlink(self, target: str, dest: PurePosixPath) -> None:
        self.args += ["--symlink", target, str(dest)]
        self.made.add(dest)

    def tmpfs(self, dest: PurePosixPath, *, mode: str = "0755", size: int | None = None) -> None:
        self.parents(dest)
        self.args += ["--perms", mode] + (["--size", str(size)] if size else []) + ["--tmpfs", str(dest)]
        self.made.add(dest)


def bwrap_argv(*, workdir: Path, data_dir: Path | None, limits: Limits, slot: int, command: list[str],
               bwrap: str = "bwrap", train_socket: Path | None = None, seccomp_fd: int | None = None,
               data_cache: Path | None = None) -> list[str]:
    """The full command: bwrap [namespaces, mounts] -- setpriv [uid] prlimit [limits] -- COMMAND.

    train_socket: the host end of this notebook's training-service session, shown at TRAIN_SOCKET
    (a Unix socket is a file: the network namespace stays empty). data_cache: the grader's decoded
    copy of the data (reference/datacache.py), shown read-only at DATACACHE.

    Not --unshare-all: that also makes a user namespace that maps only uid 0, where setpriv
    cannot switch to the slot's uid. The other namespaces are the same.
    """
    b = _Binds()
    for name in SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            b.symlink(os.readlink(host), PurePosixPath(host))
        elif host.is_dir():
            b.ro(host)
    b.args += ["--perms", "0755", "--dir", "/etc"]
    b.made.add(PurePosixPath("/etc"))
    for name in ETC_FILES:
        b.args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    b.args += ["--proc", "/proc", "--dev", "/dev"]
    b.tmpfs(PurePosixPath("/tmp"), mode="1777", size=limits.file_size_mb * MIB)
    for root in python_roots():
        b.ro(root)
    for name, where in package_dirs().items():
        b.ro(where)
        for hidden in HIDDEN_IN_PACKAGES.get(name, ()):
            if (where / hidden).is_dir():
                b.args += ["--tmpfs", str(where / hidden)]
    if data_dir is not None:
        b.ro(Path(data_dir).resolve(), DATADIR)
    if data_cache is not None:
        b.ro(Path(data_cache).resolve(), DATACACHE)
    b.rw(Path(workdir).resolve(), WORKDIR)
    if train_socket is not None:
        b.rw(Path(train_socket), TRAIN_SOCKET)

    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "labgrader", *b.args, "--chdir", str(WORKDIR)]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    inner = rlimit_argv(limits)
    if privileged():
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        inner = drop_argv(uid_for_slot(slot)) + inner
    else:
        argv += ["--unshare-user"]
    return argv + ["--", *inner, *command]


def direct_argv(limits: Limits, command: list[str]) -> list[str]:
    """--no-sandbox: the same runner, with what rlimits prlimit can set (root ignores the process limit)."""
    return rlimit_argv(limits) + command


@functools.lru_cache(maxsize=None)
def sandbox_problem() -> str | None:
    """Why bubblewrap cannot run notebooks here, or None. Tries it once per process."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return NO_BWRAP
    for tool in ("prlimit",) + (("setpriv",) if privileged() else ()):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed; the sandbox needs it for its limits (or pass --no-sandbox)"
    from grader.execution.seccomp import SeccompUnavailable, filter_fd

    try:
        seccomp = filter_fd()
    except (SeccompUnavailable, OSError) as e:
        return f"the sandbox's seccomp filter cannot be built: {e} (or pass --no-sandbox)"
    probe = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--die-with-parent",
             "--new-session", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    inner = ["prlimit", "--nproc=16", "--"]
    if privileged():
        probe += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        inner = drop_argv(UID_BASE) + inner
    else:
        probe += ["--unshare-user"]
    probe += ["--seccomp", str(seccomp)]
    try:
        done = subprocess.run(probe + ["--", *inner, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=30, env={"PATH": "/usr/bin:/bin"}, pass_fds=(seccomp,))
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap (bwrap) does not work here ({e}); fix it or pass --no-sandbox"
    finally:
        os.close(seccomp)
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"bubblewrap (bwrap) cannot make a sandbox here ({last}); fix it or pass --no-sandbox"
    return None


def require_sandbox() -> None:
    problem = sandbox_problem()
    if problem:
        raise UserError(problem)
