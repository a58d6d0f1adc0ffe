"""A corpus of escape and abuse attempts. Each is refused at store time or fails inside the
sandbox with no effect on the host (file not created, listener not reached, parent alive,
secret not seen). A benign control function runs after every runtime attempt in the same
sandbox and must pass, so the corpus cannot pass because the sandbox is broken."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

from netsuke.sandbox import (
    ExecutionTimeoutError,
    FunctionRaisedError,
    FunctionStore,
    FunctionValidationError,
    MemoryLimitError,
    OutputLimitError,
    Sandbox,
    SandboxConfig,
    SandboxViolationError,
)
from netsuke.store import NotFoundError, Store

from .conftest import SECRET, Listener

CONTROL = "def control(x: int) -> int:\n    return x * 2\n"


def fn(body: str, *, header: str = "", is_async: bool = False) -> str:
    """Code defining ``attempt`` with ``body`` indented under it."""
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    kind = "async def" if is_async else "def"
    return f"{header}\n{kind} attempt():\n{lines}\n"


# ---------------------------------------------------------------- refused at store time
STATIC: list[tuple[str, str, list[str]]] = [
    ("subclasses_via_class", fn("return ().__class__.__bases__[0].__subclasses__()"), []),
    ("function_globals", fn("def g():\n    pass\nreturn g.__globals__"), []),
    ("builtins_name", fn("return __builtins__['eval']('1')"), []),
    ("mro_attribute", fn("return int.mro()"), []),
    ("generator_frame", fn("g = (x for x in [1])\nreturn g.gi_frame.f_back.f_globals"), []),
    (
        "coroutine_frame",
        fn("async def c():\n    pass\nk = c()\nreturn k.cr_frame.f_globals"),
        [],
    ),
    ("async_generator_frame", fn("async def a():\n    yield 1\nreturn a().ag_frame"), []),
    (
        "traceback_frame",
        fn("try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__.tb_frame"),
        [],
    ),
    (
        "traceback_tb_next",
        fn("try:\n    1 / 0\nexcept Exception as e:\n    t = e.args\n    return t.tb_next"),
        [],
    ),
    ("code_object", fn("def g():\n    pass\nreturn g.__code__.co_code"), []),
    ("format_dunder", fn("return '{0.__class__}'.format(1)"), []),
    ("format_traversal", fn("return '{0.real.imag}'.format(1)"), []),
    ("format_map", fn("return '{x.real}'.format_map({'x': 1})"), []),
    ("computed_getattr_concat", fn("return getattr((), '__cl' + 'ass__')"), []),
    ("computed_getattr_variable", fn("name = 'real'\nreturn getattr(1, name)"), []),
    ("getattr_private_literal", fn("return getattr(1, '_private')"), []),
    ("setattr_computed", fn("n = 'x'\nsetattr(object(), n, 1)"), []),
    ("eval", fn("return eval('1 + 1')"), []),
    ("exec", fn("exec('x = 1')"), []),
    ("compile", fn("return compile('1', 'f', 'eval')"), []),
    ("open_passwd", fn("return open('/etc/passwd').read()"), []),
    ("dunder_import", fn("return __import__('os').system('id')"), []),
    ("import_os", fn("import os\nreturn os.getcwd()"), []),
    ("import_importlib", fn("import importlib\nreturn importlib.import_module('os')"), []),
    ("sys_modules", fn("import sys\nreturn sys.modules['os']"), []),
    ("pickle", fn("import pickle\nreturn pickle.loads(b'')"), []),
    ("marshal", fn("import marshal\nreturn marshal.loads(b'')"), []),
    ("ctypes", fn("import ctypes\nreturn ctypes.CDLL(None)"), []),
    ("subprocess", fn("import subprocess\nreturn subprocess.run(['id'])"), []),
    (
        "os_via_allowed_module",
        fn("import random\nreturn random._os.system('id')", header=""),
        ["random"],
    ),
    ("private_from_import", fn("from random import _os\nreturn _os"), ["random"]),
    ("relative_import", fn("from . import secrets\nreturn secrets"), []),
    ("except_star", fn("try:\n    pass\nexcept* ValueError:\n    pass"), []),
    (
        "metaclass_keyword",
        "class M(type):\n    pass\n\nclass A(metaclass=M):\n    pass\n\ndef attempt():\n    return 1\n",
        [],
    ),
    ("type_three_args", fn("return type('X', (), {})"), []),
    ("globals_call", fn("return globals()"), []),
    ("vars_call", fn("return vars()"), []),
    ("breakpoint", fn("breakpoint()"), []),
    ("non_nfkc_identifier", fn("return \uff45val('1')"), []),
    ("match_class_dunder", fn("match 1:\n    case object(__class__=c):\n        return c"), []),
    ("dunder_string_literal", fn("return ['__subclasses__']"), []),
    (
        "deep_nesting_parens",
        "def attempt():\n    return " + "(" * 5000 + "1" + ")" * 5000 + "\n",
        [],
    ),
    ("deep_nesting_lists", "def attempt():\n    return " + "[" * 3000 + "]" * 3000 + "\n", []),
    ("source_size_cap", fn("x = 1\n" * 20000 + "return x"), []),
]


@pytest.mark.parametrize(("case", "code", "imports"), STATIC, ids=[case for case, _, _ in STATIC])
async def test_escape_refused_at_store_time(
    store: Store, case: str, code: str, imports: list[str]
) -> None:
    functions = FunctionStore(store, Sandbox(SandboxConfig(pool_size=0)))
    with pytest.raises(FunctionValidationError) as info:
        await functions.store_function(name="attempt", code=code, allowed_imports=imports)
    error = info.value
    assert error.field in {"code", "allowed_imports[0]"}
    if case not in {"deep_nesting_lists", "source_size_cap"} and error.line is None:
        assert "nested" in error.reason or "bytes" in error.reason
    with pytest.raises(NotFoundError):
        await functions.get("attempt")


def test_the_static_corpus_is_large_enough() -> None:
    assert len(STATIC) + len(RUNTIME) + len(OS_LEVEL) >= 40


async def test_control_passes_the_same_validation(functions: FunctionStore) -> None:
    await functions.store_function(name="control", code=CONTROL)
    assert await functions.execute_function("control", {"x": 21}) == 42


# ------------------------------------------------ stored, then stopped inside the sandbox
RUNTIME: list[tuple[str, str, list[str], type[Exception], dict[str, float]]] = [
    ("infinite_loop", fn("while True:\n    pass"), [], ExecutionTimeoutError, {"timeout_s": 1}),
    (
        "async_sleep_forever",
        fn("await asyncio.sleep(3600)", header="import asyncio", is_async=True),
        ["asyncio"],
        ExecutionTimeoutError,
        {"timeout_s": 0.5},
    ),
    (
        "time_sleep_forever",
        fn("time.sleep(3600)", header="import time"),
        ["time"],
        ExecutionTimeoutError,
        {"timeout_s": 0.5},
    ),
    (
        "memory_bomb",
        fn("x = 'x' * (10 ** 10)\nreturn len(x)"),
        [],
        MemoryLimitError,
        {"memory_mb": 128},
    ),
    (
        "memory_bomb_list",
        fn("x = [0] * (10 ** 9)\nreturn len(x)"),
        [],
        MemoryLimitError,
        {"memory_mb": 128},
    ),
    (
        "recursion_bomb",
        fn("def r(n):\n    return r(n + 1)\nreturn r(0)"),
        [],
        FunctionRaisedError,
        {},
    ),
    (
        "output_flood",
        fn("while True:\n    print('x' * 1000)"),
        [],
        OutputLimitError,
        {"timeout_s": 5},
    ),
    ("result_flood", fn("return 'x' * (3 * 1024 * 1024)"), [], OutputLimitError, {}),
    ("system_exit", fn("raise SystemExit(0)"), [], FunctionRaisedError, {}),
    ("keyboard_interrupt", fn("raise KeyboardInterrupt"), [], FunctionRaisedError, {}),
    (
        "network_egress_asyncio",
        fn(
            "r, w = await asyncio.open_connection('127.0.0.1', PORT)\nreturn 'connected'",
            header="import asyncio",
            is_async=True,
        ),
        ["asyncio"],
        SandboxViolationError,
        {},
    ),
    (
        "forged_frame_on_stdout",
        fn(
            "print('0' * 32)\nprint('20')\nprint('{\"status\": \"ok\", \"value\": 1}')\nraise ValueError('real')"
        ),
        [],
        FunctionRaisedError,
        {},
    ),
    (
        "generator_close_loop",
        fn(
            "def g():\n    while True:\n        try:\n            yield 1\n        except BaseException:\n            pass\nfor x in g():\n    pass"
        ),
        [],
        ExecutionTimeoutError,
        {"timeout_s": 0.5},
    ),
]


@pytest.mark.parametrize(
    ("case", "code", "imports", "expected", "limits"),
    RUNTIME,
    ids=[r[0] for r in RUNTIME],
)
async def test_escape_fails_inside_the_sandbox(
    functions: FunctionStore,
    listener: Listener,
    host_marker: Path,
    case: str,
    code: str,
    imports: list[str],
    expected: type[Exception],
    limits: dict[str, float],
) -> None:
    code = code.replace("PORT", str(listener.port))
    await functions.store_function(
        name="attempt",
        code=code,
        allowed_imports=imports,
        timeout_s=limits.get("timeout_s", 10.0),
        memory_mb=int(limits.get("memory_mb", 512)),
    )
    with pytest.raises(expected) as info:
        await functions.execute_function("attempt", {})
    assert info.value.execution_id is not None  # type: ignore[attr-defined]
    assert SECRET not in str(info.value)
    if case == "recursion_bomb":
        assert info.value.exc_type == "RecursionError"  # type: ignore[attr-defined]
        assert "<netsuke-function>" in info.value.traceback  # type: ignore[attr-defined]
        assert "_worker" not in info.value.traceback  # type: ignore[attr-defined]
    if case in {"system_exit", "keyboard_interrupt"}:
        assert info.value.exc_type in {"SystemExit", "KeyboardInterrupt"}  # type: ignore[attr-defined]
    assert listener.connections == 0
    await _control_still_passes(functions)


async def _control_still_passes(functions: FunctionStore) -> None:
    await functions.store_function(name="control", code=CONTROL)
    assert await functions.execute_function("control", {"x": 21}) == 42


# -------------------------------- past the Python layer: the OS boundary must still hold
# These run with a permissive import list, as if user code had escaped the static policy and
# the guards; only namespaces, rlimits, seccomp and the cleared environment stand in the way.
OS_IMPORTS = ["os", "socket", "ctypes", "subprocess", "threading", "signal", "sys", "pickle",
              "marshal", "importlib", "types", "resource", "time"]  # fmt: skip

SYSTEM = "import os\nos.system('touch /tmp/escaped')\n"

OS_LEVEL: list[tuple[str, str, type[Exception] | None]] = [
    (
        "read_etc_passwd",
        fn(
            "fd = os.open('/etc/passwd', os.O_RDONLY)\nreturn os.read(fd, 100).decode()",
            header="import os",
        ),
        FunctionRaisedError,
    ),
    (
        "write_outside",
        fn(
            "fd = os.open(MARKER, os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')\nreturn 'written'",
            header="import os",
        ),
        FunctionRaisedError,
    ),
    (
        "write_usr",
        fn(
            "fd = os.open('/usr/escaped', os.O_CREAT | os.O_WRONLY)\nreturn 'written'",
            header="import os",
        ),
        FunctionRaisedError,
    ),
    (
        "tmp_is_bounded",
        fn(
            "fd = os.open('/tmp/big', os.O_CREAT | os.O_WRONLY)\nfor i in range(64):\n    os.write(fd, b'x' * (1 << 20))\nreturn 'filled'",
            header="import os",
        ),
        FunctionRaisedError,
    ),
    ("environment_secret", fn("return dict(os.environ)", header="import os"), None),
    (
        "proc_environ_of_init",
        fn(
            "fd = os.open('/proc/1/environ', os.O_RDONLY)\nreturn os.read(fd, 4096).decode(errors='replace')",
            header="import os",
        ),
        FunctionRaisedError,
    ),
    (
        "socket_connect",
        fn(
            "s = socket.socket()\ns.connect(('127.0.0.1', PORT))\nreturn 'connected'",
            header="import socket",
        ),
        SandboxViolationError,
    ),
    (
        "raw_syscall_socket",
        fn("libc = ctypes.CDLL(None)\nreturn libc.syscall(41, 2, 1, 0)", header="import ctypes"),
        SandboxViolationError,
    ),
    ("fork_bomb", fn("while True:\n    os.fork()", header="import os"), SandboxViolationError),
    (
        "subprocess_shell",
        fn(
            "subprocess.run(['/bin/sh', '-c', 'touch MARKER'])\nreturn 'ran'",
            header="import subprocess",
        ),
        SandboxViolationError,
    ),
    ("exec_binary", fn("os.execv('/bin/sh', ['sh'])", header="import os"), SandboxViolationError),
    (
        "kill_parent",
        fn("os.kill(os.getppid(), signal.SIGKILL)\nreturn 'sent'", header="import os, signal"),
        SandboxViolationError,
    ),
    (
        "kill_everyone",
        fn("os.kill(-1, signal.SIGKILL)\nreturn 'sent'", header="import os, signal"),
        SandboxViolationError,
    ),
    (
        "setuid_root",
        fn("os.setuid(0)\nreturn os.getuid()", header="import os"),
        SandboxViolationError,
    ),
    (
        "raise_rlimit",
        fn(
            "resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nreturn 'raised'",
            header="import resource",
        ),
        FunctionRaisedError,
    ),
    (
        "thread_outlives_limit",
        fn(
            "def late():\n    time.sleep(2)\n    os.open(MARKER, os.O_CREAT | os.O_WRONLY)\nthreading.Thread(target=late).start()\nreturn 'started'",
            header="import os, threading, time",
        ),
        FunctionRaisedError,
    ),
    (
        "pickle_reduce_system",
        fn(
            "class P:\n    def __reduce__(self):\n        return (os.system, ('touch MARKER',))\nreturn pickle.loads(pickle.dumps(P()))",
            header="import os, pickle",
        ),
        SandboxViolationError,
    ),
    (
        "code_object_from_marshal",
        fn(
            "f = types.FunctionType(marshal.loads(CODE_BYTES), {})\nreturn f()",
            header="import marshal, types",
        ),
        SandboxViolationError,
    ),
    (
        "importlib_os_system",
        fn(
            "return importlib.import_module('os').system('touch MARKER')", header="import importlib"
        ),
        SandboxViolationError,
    ),
    (
        "sys_modules_os",
        fn("return sys.modules['os'].system('touch MARKER')", header="import sys"),
        SandboxViolationError,
    ),
    (
        "forge_result_fd",
        fn(
            "for name in os.listdir('/proc/self/fd'):\n"
            "    if int(name) > 2:\n"
            "        try:\n"
            "            os.write(int(name), b'0' * 32 + b'\\n2\\n{}')\n"
            "        except OSError:\n"
            "            pass\n"
            "return 'forged'",
            header="import os",
        ),
        SandboxViolationError,
    ),
]


@pytest.mark.parametrize(("case", "code", "expected"), OS_LEVEL, ids=[r[0] for r in OS_LEVEL])
async def test_os_boundary_holds_past_the_python_layer(
    listener: Listener,
    host_marker: Path,
    spawn_mode: str,
    case: str,
    code: str,
    expected: type[Exception] | None,
) -> None:
    config = SandboxConfig(
        pool_size=1, allowed_imports=frozenset(OS_IMPORTS), fork_server=spawn_mode == "fork"
    )
    async with Sandbox(config) as sandbox:
        if sandbox.isolation is None or sandbox.spawn != spawn_mode:
            pytest.skip(f"no isolation in {spawn_mode} mode: {sandbox.refusal}")
        code = code.replace("PORT", str(listener.port)).replace("MARKER", str(host_marker))
        code = code.replace("CODE_BYTES", repr(marshal.dumps(compile(SYSTEM, "x", "exec"))))
        if expected is None:
            result = await sandbox.run(
                code, "attempt", {}, is_async=False, allowed_imports=OS_IMPORTS, validate=False
            )
            assert SECRET not in str(result.value)
            if case == "environment_secret":
                # bwrap sets PWD; Python's locale coercion sets LC_CTYPE; nothing of the host's
                assert set(result.value) <= {"PWD", "LC_CTYPE"}
        else:
            with pytest.raises(expected) as info:
                await sandbox.run(
                    code,
                    "attempt",
                    {},
                    is_async=False,
                    timeout_s=5,
                    allowed_imports=OS_IMPORTS,
                    validate=False,  # past the static policy: only the OS boundary stands
                )
            assert SECRET not in str(info.value)
            if case == "read_etc_passwd":
                assert "root:" not in str(info.value)
        assert listener.connections == 0
        assert os.getppid() > 1  # the test process (and its parent) are alive
        control = await sandbox.run(CONTROL, "control", {"x": 4}, is_async=False)
        assert control.value == 8


async def test_the_worker_environment_and_logs_hold_no_secret(
    functions: FunctionStore, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    await functions.store_function(name="attempt", code=fn("raise ValueError('boom')"))
    with pytest.raises(FunctionRaisedError) as info:
        await functions.execute_function("attempt", {})
    assert SECRET not in str(info.value) and SECRET not in info.value.traceback
    await functions.store_function(name="control", code=CONTROL)
    await functions.execute_function("control", {"x": 1})
    # An idle pre-started worker: read its environment from the host side.
    pool = sandbox._pool
    assert pool is not None
    worker = await pool.acquire()
    try:
        for environ in _environments(worker.pid or 0):
            assert SECRET.encode() not in environ
            names = {item.split(b"=")[0] for item in environ.split(b"\x00") if item}
            assert names <= {b"PWD", b"LC_CTYPE"}, names
    finally:
        await worker.kill()
    out = capsys.readouterr()
    assert SECRET not in out.out and SECRET not in out.err


def _environments(pid: int) -> list[bytes]:
    """The environment blocks of ``pid`` and every process below it (read from the host)."""
    return [Path(f"/proc/{p}/environ").read_bytes() for p in _descendants(pid)]


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(c) for c in children)
    return found


async def test_guard_violation_is_reported_even_when_user_code_catches_it(
    sandbox: Sandbox,
) -> None:
    code = fn("try:\n    import os\nexcept BaseException:\n    return 'caught'")
    with pytest.raises(SandboxViolationError) as info:
        await sandbox.run(code, "attempt", {}, is_async=False, validate=False)
    assert "os" in info.value.reason
    code = fn("try:\n    return getattr(1, '_' + 'x')\nexcept BaseException:\n    return 'caught'")
    with pytest.raises(SandboxViolationError):
        await sandbox.run(code, "attempt", {}, is_async=False, validate=False)
    assert (await sandbox.run(CONTROL, "control", {"x": 1}, is_async=False)).value == 2


async def test_each_call_has_a_private_tmp(spawn_mode: str) -> None:
    config = SandboxConfig(
        pool_size=1, allowed_imports=frozenset(OS_IMPORTS), fork_server=spawn_mode == "fork"
    )
    write = fn(
        "fd = os.open('/tmp/left-behind', os.O_CREAT | os.O_WRONLY)\nos.write(fd, b'x')\nreturn os.listdir('/tmp')",
        header="import os",
    )
    look = fn("return os.listdir('/tmp')", header="import os")
    async with Sandbox(config) as sandbox:
        if sandbox.isolation is None or sandbox.spawn != spawn_mode:
            pytest.skip(f"no isolation in {spawn_mode} mode: {sandbox.refusal}")
        first = await sandbox.run(write, "attempt", {}, is_async=False, allowed_imports=["os"])
        assert first.value == ["left-behind"]
        second = await sandbox.run(look, "attempt", {}, is_async=False, allowed_imports=["os"])
        assert second.value == []
