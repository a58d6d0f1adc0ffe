"""Entry of the worker program (appended to ``_worker.py``'s source; standard library only).

Two modes, chosen by the config on the command line:

* one call (``result_fd`` given): start up, serve one job, exit;
* fork server (``control_fd`` given): start up once (preload, mount view, drop privileges),
  report ``ready`` on the control socket (``AF_UNIX``/``SOCK_SEQPACKET``), then serve requests:

  - ``spawn <id>`` with two file descriptors (the job pipe's read end, the result pipe's write
    end): fork a child, answer ``pid <id> <pid>`` with a pidfd of the child;
  - when a child ends: ``exit <id> <status>`` (``status`` as ``os.waitstatus_to_exitcode``).

  Each child, before it reports ready: dies with the server (``PR_SET_PDEATHSIG``), closes
  every descriptor but stdin (the job), stderr and its result pipe, enters a user and mount
  namespace of its own with a fresh bounded tmpfs on ``/tmp`` (private to this one call), drops
  every capability and becomes non-dumpable (siblings cannot read its memory or ``/proc``
  files). Then it serves its one call exactly as an exec-mode worker does.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time these names come from the parts concatenated before
    from netsuke.sandbox._lockdown import _libc
    from netsuke.sandbox._worker import FILENAME, Guard, prepare, serve_one

CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
MS_REC, MS_PRIVATE = 16384, 1 << 18


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def private_tmp(tmp_mb: int) -> None:
    """Own user and mount namespaces, a fresh ``/tmp``, then no capabilities at all."""
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(user, mount)")
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # our own /proc files, to write the maps
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")
    for args in (
        (b"none", b"/", None, MS_REC | MS_PRIVATE, None),
        (b"tmpfs", b"/tmp", b"tmpfs", 0, f"size={tmp_mb}m,mode=1777".encode()),
    ):
        if libc.mount(args[0], args[1], args[2], ctypes.c_ulong(args[3]), args[4]) != 0:
            raise OSError(ctypes.get_errno(), f"mount {args[1].decode()}")
    header, data = CapHeader(0x20080522, 0), (CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def warm_up() -> None:
    """Touch, before reporting ready, the memory a call will touch (copy-on-write faults off the
    call's path): the JSON codec, the compiler, the guard's tables, a trivial job."""
    job = json.loads(json.dumps({"code": "def f(a):\n    return [a, {'k': 1.5}]\n", "args": {}}))
    guard = Guard([])
    scope: dict[str, Any] = {"__builtins__": guard.builtins()}
    exec(compile(job["code"], FILENAME, "exec"), scope)
    json.dumps({"status": "ok", "value": scope["f"]("x")})


def child(fds: list[int], config: dict[str, Any]) -> None:
    job_fd, result_fd = fds
    try:
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.dup2(job_fd, 0)
        for fd in range(3, 1024):
            if fd != result_fd:
                try:
                    os.close(fd)
                except OSError:
                    pass
        private_tmp(config["tmp_mb"])
        warm_up()
        serve_one(result_fd, config)
    except BaseException as exc:
        try:
            os.write(2, f"fork child setup failed: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(70)


def zygote(config: dict[str, Any]) -> None:
    prepare(config)
    gc.collect()
    gc.freeze()  # children share these pages; the collector will not walk (and copy) them
    ctl = socket.socket(fileno=config["control_fd"])
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ, None)
    ctl.send(b"ready")
    while True:
        for key, _ in sel.select():
            if key.data is None:
                data, fds, _, _ = socket.recv_fds(ctl, 256, 4)
                if not data:
                    os._exit(0)  # the host went away; children die with us
                words = data.split()
                if words[0] != b"spawn" or len(fds) != 2:
                    for fd in fds:
                        os.close(fd)
                    continue
                pid = os.fork()
                if pid == 0:
                    child(fds, config)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                sel.register(pidfd, selectors.EVENT_READ, (words[1], pid))
                socket.send_fds(ctl, [b"pid %s %d" % (words[1], pid)], [pidfd])
            else:
                ident, pid = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                ctl.send(b"exit %s %d" % (ident, os.waitstatus_to_exitcode(status)))


def main() -> None:
    config = json.loads(sys.argv[1])
    if config.get("control_fd") is not None:
        zygote(config)
    else:
        prepare(config)
        serve_one(config["result_fd"], config)


if __name__ == "__main__":
    main()
