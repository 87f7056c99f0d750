"""The seccomp filter bwrap loads into every sandbox (`bwrap --seccomp FD`): no nested user namespaces.

A user namespace would give the notebook root inside it, and with that mounts such as a tmpfs
that takes host memory outside every limit. bwrap's --disable-userns needs --unshare-user,
which the uid drop avoids, so the filter refuses them instead: unshare() and clone() with
CLONE_NEWUSER fail with EPERM, and clone3() fails with ENOSYS (its flags sit in a struct a
filter cannot read), so libc falls back to clone(), as container runtimes do. SysV shared
memory (shmget) is refused too: an unattached segment belongs to no process, so no limit
could count it; so are ptrace and process_vm_* (the runner shares the kernel's uid) and the
keyring calls (a uid's keyring outlives the sandbox). Everything else is allowed; a foreign
architecture's syscalls kill the process.
"""

from __future__ import annotations

import errno
import functools
import os
import platform

CLONE_NEWUSER = 0x10000000
# another process's memory (the runner's: same uid), and the kernel keyrings, which outlive a sandbox
# and are shared by every sandbox of one uid: a channel from one student's notebook to the next
DENIED = ("ptrace", "process_vm_readv", "process_vm_writev", "add_key", "request_key", "keyctl")
# clone()'s flags are its first argument everywhere but s390, where the filter would need another index.
FLAGS_FIRST = ("x86_64", "aarch64", "arm64", "ppc64le", "riscv64")


class SeccompUnavailable(Exception):
    """The filter cannot be built here; the message says why in one line."""


@functools.lru_cache(maxsize=1)
def filter_program() -> bytes:
    """The filter as the BPF program bwrap reads; SeccompUnavailable without pyseccomp/libseccomp."""
    if platform.machine() not in FLAGS_FIRST:
        raise SeccompUnavailable(f"no seccomp filter for {platform.machine()}: clone()'s flags argument is elsewhere")
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as e:
        raise SeccompUnavailable(f"pyseccomp or libseccomp2 is missing ({e}); apt install libseccomp2") from None
    f = sc.SyscallFilter(sc.ALLOW)
    newuser = sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)
    f.add_rule(sc.ERRNO(errno.EPERM), "unshare", newuser)
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", newuser)
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(sc.ERRNO(errno.EPERM), "shmget")
    for name in DENIED:
        f.add_rule(sc.ERRNO(errno.EPERM), name)
    fd = os.memfd_create("labgrader-seccomp-export", 0)
    with os.fdopen(fd, "w+b") as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        return tmp.read()


def filter_fd() -> int:
    """A fresh readable fd holding the program (bwrap reads it to the end); the caller closes it."""
    program = filter_program()
    fd = os.memfd_create("labgrader-seccomp", 0)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
