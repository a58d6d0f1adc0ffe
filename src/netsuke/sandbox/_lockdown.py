"""Lockdown of a worker process (standard library only; part of the worker program).

The host concatenates ``_lockdown.py``, ``_worker.py`` and ``_entry.py`` into the program it
runs with ``python -I -S -c``. This part holds the OS-level steps: the ``unshare``-mode mount
view, dropping privileges, rlimits and the seccomp filter.

Seccomp (x86_64; elsewhere the filter is reported as off): the process is killed (``SIGSYS``)
on ``socket``/``connect``/``bind``/``listen``/``accept``, ``execve``/``execveat``,
``fork``/``vfork`` and ``clone`` without ``CLONE_THREAD``, ``ptrace``, uid/gid changes,
``setsid``/``setpgid``, ``mount``/``umount2``/``pivot_root``/``chroot``, ``unshare``/``setns``,
keyrings, ``bpf``, ``perf_event_open``, ``userfaultfd``, ``process_vm_readv/writev``,
``io_uring``, module loading, ``kexec``, ``reboot``, ``personality``, and ``kill``/``tkill``/
``tgkill`` aimed at any process but itself; ``clone3`` fails with ``ENOSYS`` (so threads fall
back to ``clone``, which ``RLIMIT_NPROC=0`` refuses anyway). ``socketpair`` stays allowed
(asyncio's self-pipe); with no network namespace it reaches nothing.
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
from typing import Any

# seccomp (x86_64 only): syscalls that kill the process.
AUDIT_ARCH_X86_64 = 0xC000003E
X86_64_DENY = {
    "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "bind": 49, "listen": 50,
    "fork": 57, "vfork": 58, "execve": 59, "ptrace": 101, "setuid": 105, "setgid": 106,
    "setpgid": 109, "setsid": 112, "setreuid": 113, "setregid": 114, "setgroups": 116,
    "setresuid": 117, "setresgid": 119, "personality": 135, "pivot_root": 155, "chroot": 161,
    "mount": 165, "umount2": 166, "reboot": 169, "init_module": 175, "delete_module": 176,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "accept4": 288, "perf_event_open": 298, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}  # fmt: skip
X86_64_CLONE, X86_64_CLONE3 = 56, 435
X86_64_KILL, X86_64_TKILL, X86_64_TGKILL = 62, 200, 234
CLONE_THREAD = 0x00010000
RET_KILL, RET_ALLOW, RET_ENOSYS = 0x80000000, 0x7FFF0000, 0x00050000 | 38


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


KEEP_VISIBLE = {"usr", "lib", "lib32", "lib64", "bin", "sbin", "proc", "dev", "tmp", "sys"}


def build_mount_view(tmp_mb: int) -> None:
    """``unshare`` mode only (root in a fresh mount namespace, after the preload): hide every
    top-level directory but the system ones under empty read-only tmpfs, mount a bounded
    private ``/tmp``, and make every other mount read-only."""
    libc = _libc()
    ms_rdonly, ms_remount, ms_bind, ms_rec, ms_private = 1, 32, 4096, 16384, 1 << 18

    def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
        if libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ):
            err = ctypes.get_errno()
            raise OSError(err, f"mount {target}: {os.strerror(err)}")

    mount("none", "/", None, ms_rec | ms_private, None)
    for entry in sorted(os.listdir("/")):
        path = "/" + entry
        if entry not in KEEP_VISIBLE and os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", ms_rdonly, "size=4k,mode=0755")
    mount("tmpfs", "/tmp", "tmpfs", 0, f"size={tmp_mb}m,mode=1777")
    with open("/proc/self/mountinfo") as info:
        targets = [line.split()[4] for line in info]
    for target in targets:
        if target == "/tmp" or target.startswith(("/proc", "/sys", "/dev")):
            continue
        try:
            mount("none", target, None, ms_remount | ms_bind | ms_rdonly, None)
        except OSError:
            pass  # a mount we cannot remount (already read-only or special)


def drop_privileges(uid: int, gid: int) -> None:
    if os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not drop privileges")


def set_rlimits(memory_mb: int, cpu_s: int, file_bytes: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + cpu_s
    limits = [
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, file_bytes),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in limits:
        hard = value + 1 if which == resource.RLIMIT_CPU else value
        resource.setrlimit(which, (value, hard))


def install_seccomp() -> bool:
    """Install the deny filter; ``False`` where unsupported (not x86_64)."""
    if os.uname().machine != "x86_64":
        return False
    ld_w_abs, jeq_k, jset_k, ret_k = 0x20, 0x15, 0x45, 0x06
    prog: list[tuple[int, int, int, int]] = [
        (ld_w_abs, 0, 0, 4),
        (jeq_k, 1, 0, AUDIT_ARCH_X86_64),
        (ret_k, 0, 0, RET_KILL),
        (ld_w_abs, 0, 0, 0),
    ]
    for nr in sorted(X86_64_DENY.values()):
        prog += [(jeq_k, 0, 1, nr), (ret_k, 0, 0, RET_KILL)]
    prog += [(jeq_k, 0, 1, X86_64_CLONE3), (ret_k, 0, 0, RET_ENOSYS)]
    prog += [
        (jeq_k, 0, 4, X86_64_CLONE),
        (ld_w_abs, 0, 0, 16),
        (jset_k, 0, 1, CLONE_THREAD),
        (ret_k, 0, 0, RET_ALLOW),
        (ret_k, 0, 0, RET_KILL),
    ]
    me = os.getpid()
    for nr in (X86_64_KILL, X86_64_TKILL, X86_64_TGKILL):
        prog += [
            (jeq_k, 0, 4, nr),
            (ld_w_abs, 0, 0, 16),
            (jeq_k, 0, 1, me),
            (ret_k, 0, 0, RET_ALLOW),
            (ret_k, 0, 0, RET_KILL),
        ]
    prog.append((ret_k, 0, 0, RET_ALLOW))
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buffer = ctypes.create_string_buffer(raw)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buffer))
    libc = _libc()
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(SECCOMP)")
    return True
