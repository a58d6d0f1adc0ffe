"""The program that runs inside one isolated worker process (standard library only).

The host never imports this module: it concatenates ``_lockdown.py``, this and ``_entry.py``
and runs them with ``python -I -S -c <source> <config-json>`` inside the isolation
(bubblewrap, unshare or none). One worker serves exactly one call and exits.

Start-up (before any job, so a pooled worker is warm):

1. import the preload modules;
2. in ``unshare`` mode, build the mount view: private mounts, non-system top-level directories
   hidden, every mount read-only, a bounded tmpfs on ``/tmp``;
3. drop to the unprivileged uid/gid (no supplementary groups);
4. write ``R`` to the result fd: ready.

The job (one JSON document on stdin, then EOF): ``nonce``, ``code``, ``name``, ``args``,
``is_async``, ``allowed_imports``, ``memory_mb``, ``cpu_s``, ``max_output``, ``max_result``.

Lockdown, in order: import the function's modules; rlimits (address space, CPU seconds, file
size, open files, processes = 0 so neither fork nor threads, no core files); a seccomp filter
(x86_64) that kills the process on sockets, exec, fork, ptrace, mount, namespaces and signals to
other processes; restricted builtins and an import guard that hands out read-only views of
allowed modules (``string.Formatter`` replaced by one whose field lookups obey the guard,
``functools.update_wrapper``/``wraps`` by ones whose attribute names do); an
audit hook refusing ``eval``/``exec`` of anything but the function's own code, except the code
generation of ``collections.namedtuple`` and module imports (this stops
``typing.get_type_hints`` from evaluating strings and ``dataclasses`` from compiling names
built at run time). Then the function runs.

The result frame goes to the inherited result fd (never stdout, which user code owns): the
call's nonce, a newline, the payload's length in bytes, a newline, the payload: one JSON
object ``{"status", ...}``. Status is ``ok`` (``value``),
``error`` (``type``, ``message``, ``traceback`` with user frames only), ``memory``,
``violation`` (``reason``) or ``output`` (``what``: ``captured output`` over its cap, or
``result`` over ``max_result`` bytes of JSON, measured before the frame is built).
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import sys
import traceback
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time these names come from _lockdown.py, concatenated before
    from netsuke.sandbox._lockdown import (
        build_mount_view,
        drop_privileges,
        install_seccomp,
        set_rlimits,
    )

FILENAME = "<netsuke-function>"

SAFE_BUILTINS = [
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "format",
    "frozenset",
    "hash",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "aiter",
    "anext",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "object",
    "oct",
    "ord",
    "pow",
    "print",
    "property",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "type",
    "zip",
    "id",
    "NotImplemented",
    "Ellipsis",
]


#: Attribute names the guarded ``getattr`` family and format-string lookups refuse, besides
#: private ones: the same list as the store-time policy (``_policy.FORBIDDEN_ATTRS``; a test
#: keeps them equal).
FORBIDDEN_ATTRS = frozenset(
    ["format", "format_map", "vformat", "get_field", "attrgetter", "methodcaller", "mro"]
)
INTROSPECTION_PREFIXES = ("gi_", "cr_", "ag_", "tb_", "f_", "co_", "func_")
#: Modules whose frames may ``eval``/``exec`` once user code runs: the import system, and
#: ``collections.namedtuple``, which checks every name is an identifier before generating code.
#: Not ``dataclasses``: it pastes annotation keys (any string, through a class built at run
#: time) into the code it generates.
EXEC_CALLERS = frozenset(
    [
        "collections",
        "importlib._bootstrap",
        "importlib._bootstrap_external",
        "_frozen_importlib",
        "_frozen_importlib_external",
    ]
)


class Violation(BaseException):
    """Raised inside the sandbox when user code crosses a guard (not catchable by ``except
    Exception``; the worker reports a violation even if user code catches it)."""


class OutputFlood(BaseException):
    """Captured output went over its cap."""


class CappedWriter:
    """A text stream keeping at most ``cap`` characters; going over raises ``OutputFlood``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        text = str(text)
        self.size += len(text)
        if self.size > self.cap:
            raise OutputFlood()
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        return None

    def getvalue(self) -> str:
        return "".join(self.parts)


class FrozenType(type):
    """The metaclass of ``ModuleView``: its class attributes cannot be set or deleted."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise AttributeError(f"module views are read-only (cannot set {name!r})")

    def __delattr__(cls, name: str) -> None:
        raise AttributeError(f"module views are read-only (cannot delete {name!r})")


class ModuleView(metaclass=FrozenType):
    """A read-only view of an allowed module's public names: reading works like the module,
    setting or deleting an attribute raises ``AttributeError``."""

    __slots__ = ("_view_name", "_view_names")

    def __init__(self, name: str, names: dict[str, Any]) -> None:
        object.__setattr__(self, "_view_name", name)
        object.__setattr__(self, "_view_names", types.MappingProxyType(names))

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._view_names[attr]
        except KeyError:
            raise AttributeError(f"module {self._view_name!r} has no attribute {attr!r}") from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"module view {self._view_name!r} is read-only (cannot set {attr!r})")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(
            f"module view {self._view_name!r} is read-only (cannot delete {attr!r})"
        )

    def __repr__(self) -> str:
        return f"<module view {self._view_name!r}>"


def guarded_formatter(guard: Guard) -> type:
    """A ``string.Formatter`` whose field lookups (``{0.attr}``) pass the guard's name check.

    Not a subclass of the real one (``super()`` would reach its unguarded ``get_field``): the
    real methods are borrowed as plain functions, and they all resolve fields through
    ``self.get_field``, which is ours."""
    import string

    split = importlib.import_module("_string").formatter_field_name_split
    real = string.Formatter

    def get_field(self: Any, field_name: str, args: Any, kwargs: Any) -> Any:
        first, rest = split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, i in rest:
            obj = getattr(obj, guard.check_name(i)) if is_attr else obj[i]
        return obj, first

    names = ["format", "vformat", "_vformat", "parse", "get_value", "check_unused_args"]
    names += ["format_field", "convert_field"]
    body: dict[str, Any] = {n: vars(real)[n] for n in names}
    body.update(get_field=get_field, __module__="string", __doc__=real.__doc__)
    return type("Formatter", (), body)


def guarded_type(guard: Guard) -> Any:
    """``type`` for user code: ``type(x)``, ``isinstance(c, type)`` and ``issubclass`` work as
    usual; making a class with ``type(name, bases, namespace)`` (whose names could be built at
    run time, dunders included) is a violation, as the static policy says of a literal call."""

    class TypeOfUserCode(type):
        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            if len(args) != 1 or kwargs:
                raise guard.violate("type() with other than one argument is not allowed")
            return type(args[0])

        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, type)

        def __subclasscheck__(cls, sub: Any) -> bool:
            return issubclass(sub, type)

    return TypeOfUserCode("type", (), {"__module__": "builtins"})


def guarded_wrapping(guard: Guard) -> dict[str, Any]:
    """``functools.update_wrapper`` and ``wraps`` whose ``assigned``/``updated`` attribute names
    are the defaults or pass the guard's name check (else they copy ``__globals__`` of any
    function into the caller's own globals)."""
    import functools

    defaults = {*functools.WRAPPER_ASSIGNMENTS, *functools.WRAPPER_UPDATES}

    def names(attrs: Any) -> tuple[str, ...]:
        checked = tuple(attrs)
        for attr in checked:
            if attr not in defaults:
                guard.check_name(attr)
        return checked

    def update_wrapper(
        wrapper: Any,
        wrapped: Any,
        assigned: Any = functools.WRAPPER_ASSIGNMENTS,
        updated: Any = functools.WRAPPER_UPDATES,
    ) -> Any:
        return functools.update_wrapper(wrapper, wrapped, names(assigned), names(updated))

    def wraps(
        wrapped: Any,
        assigned: Any = functools.WRAPPER_ASSIGNMENTS,
        updated: Any = functools.WRAPPER_UPDATES,
    ) -> Any:
        return functools.partial(
            update_wrapper, wrapped=wrapped, assigned=names(assigned), updated=names(updated)
        )

    update_wrapper.__doc__ = functools.update_wrapper.__doc__
    wraps.__doc__ = functools.wraps.__doc__
    return {"update_wrapper": update_wrapper, "wraps": wraps}


class Guard:
    """Restricted builtins, a safe ``getattr`` family and an import guard for one call."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = set(allowed)
        self.violations: list[str] = []
        self.views: dict[str, ModuleView] = {}
        self.code: types.CodeType | None = None

    def violate(self, reason: str) -> Violation:
        self.violations.append(reason)
        return Violation(reason)

    def permitted(self, module: str) -> bool:
        return module in self.allowed or module.split(".")[0] in self.allowed

    def view(self, name: str) -> ModuleView:
        """A read-only view of module ``name``'s public names; submodules only if allowed."""
        if name in self.views:
            return self.views[name]
        module = sys.modules.get(name) or importlib.import_module(name)
        names: dict[str, Any] = {}
        self.views[name] = ModuleView(name, names)  # filled below (submodules may cycle)
        for attr, value in vars(module).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, types.ModuleType):
                if self.permitted(value.__name__):
                    names[attr] = self.view(value.__name__)
                continue
            names[attr] = value
        if name == "string":
            names["Formatter"] = guarded_formatter(self)
        elif name == "functools":
            names.update(guarded_wrapping(self))
        return self.views[name]

    def do_import(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if level != 0 or not isinstance(name, str) or not self.permitted(name):
            raise self.violate(f"import of {name!r} is not allowed")
        importlib.import_module(name)
        if fromlist:
            for item in fromlist:
                sub = f"{name}.{item}"
                if isinstance(item, str) and item.startswith("_"):
                    raise self.violate(f"import of private name {sub!r}")
            return self.view(name)
        return self.view(name.split(".")[0])

    def check_name(self, name: object) -> str:
        """``name`` if user code may read or set that attribute, else a violation: private and
        dunder names, format-string and attrgetter helpers, frame and code attributes."""
        if (
            not isinstance(name, str)
            or name.startswith("_")
            or name in FORBIDDEN_ATTRS
            or name.startswith(INTROSPECTION_PREFIXES)
        ):
            raise self.violate(f"attribute {name!r} is not accessible")
        return name

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        """Audit hook, on while user code runs: ``eval``/``exec`` only of the function's own
        code or from ``EXEC_CALLERS`` (``typing.get_type_hints`` would evaluate strings)."""
        if event != "exec" or self.code is None or (args and args[0] is self.code):
            return
        caller = sys._getframe(1).f_globals.get("__name__")
        if caller not in EXEC_CALLERS:
            raise self.violate(f"evaluating code (from {caller}) is not allowed")

    def builtins(self) -> dict[str, Any]:
        table: dict[str, Any] = {n: getattr(builtins, n) for n in SAFE_BUILTINS}
        for n, v in vars(builtins).items():
            if isinstance(v, type) and issubclass(v, BaseException):
                table[n] = v
        marker = object()

        def safe_getattr(obj: object, name: str, default: Any = marker) -> Any:
            name = self.check_name(name)
            return getattr(obj, name) if default is marker else getattr(obj, name, default)

        def safe_hasattr(obj: object, name: str) -> bool:
            return hasattr(obj, self.check_name(name))

        def safe_setattr(obj: object, name: str, value: Any) -> None:
            setattr(obj, self.check_name(name), value)

        table.update(
            getattr=safe_getattr,
            hasattr=safe_hasattr,
            setattr=safe_setattr,
            type=guarded_type(self),
            __import__=self.do_import,
            __build_class__=builtins.__build_class__,
            __name__="netsuke_function",
        )
        return table


def user_traceback(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    lines = traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)[-4000:]


def result_size_at_least(value: Any, cap: int) -> int:
    """A cheap lower bound of ``value``'s JSON size, walked without encoding, and stopped as
    soon as it passes ``cap`` (a huge string is measured, not copied)."""
    size, todo, seen = 0, [value], set()
    while todo and size <= cap:
        item = todo.pop()
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, dict | list | tuple):
            if id(item) in seen:
                continue  # shared or circular: json.dumps decides
            seen.add(id(item))
            size += 2 + max(len(item) - 1, 0)
            if isinstance(item, dict):
                todo.extend(item.keys())
                todo.extend(item.values())
            else:
                todo.extend(item)
        else:
            size += 1
    return size


def check_result(value: Any, cap: int) -> dict[str, Any] | None:
    """``None`` when ``value`` serialises within ``cap`` bytes, else the frame saying why."""
    if result_size_at_least(value, cap) > cap:
        return {"status": "output", "what": "result", "limit": cap}
    try:
        size = len(json.dumps(value))  # ASCII: characters are bytes
    except (TypeError, ValueError, RecursionError) as exc:
        return {"status": "error", "type": "InvalidResult", "message": str(exc)[:2000]}
    except MemoryError:
        return {"status": "memory"}
    if size > cap:
        return {"status": "output", "what": "result", "limit": cap}
    return None


def run_job(job: dict[str, Any], guard: Guard, out: CappedWriter) -> dict[str, Any]:
    try:
        code = compile(job["code"], FILENAME, "exec")
        scope: dict[str, Any] = {"__builtins__": guard.builtins(), "__name__": "netsuke_function"}
        guard.code = code
        sys.addaudithook(guard.audit)
        sys.stdout = sys.stderr = out
        exec(code, scope)
        function = scope[job["name"]]
        if job["is_async"]:
            import asyncio

            value = asyncio.run(function(**job["args"]))
        else:
            value = function(**job["args"])
    except Violation as exc:
        return {
            "status": "violation",
            "reason": guard.violations[0] if guard.violations else str(exc),
        }
    except OutputFlood:
        return {"status": "output", "what": "captured output", "limit": out.cap}
    except MemoryError:
        return {"status": "memory"}
    except BaseException as exc:  # the function's own failure, SystemExit included
        frame = error_frame(exc)
    else:
        try:
            refused = check_result(value, job.get("max_result", 1 << 20))
        except MemoryError:
            refused = {"status": "memory"}
        frame = refused or {"status": "ok", "value": value}
        del value
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if guard.violations:
        return {"status": "violation", "reason": guard.violations[0]}
    if out.size > out.cap:
        return {"status": "output", "what": "captured output", "limit": out.cap}
    return frame


def error_frame(exc: BaseException) -> dict[str, Any]:
    return {
        "status": "error",
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": user_traceback(exc),
    }


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def prepare(config: dict[str, Any]) -> None:
    """Start-up before any job: preload, mount view (unshare mode), drop privileges."""
    for module in config.get("preload", []):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if config.get("mount_view"):
        build_mount_view(config["tmp_mb"])
    if config.get("drop_to") is not None:
        drop_privileges(config["drop_to"], config["drop_to"])


def serve_one(fd: int, config: dict[str, Any]) -> None:
    """Report ready on ``fd``, run the one job read from stdin, write its frame, exit."""
    os.write(fd, b"R")
    job = json.loads(sys.stdin.buffer.read())
    os.close(0)
    nonce: str = job["nonce"]
    guard = Guard(job["allowed_imports"])
    out = CappedWriter(job["max_output"])
    try:
        for module in [*job["allowed_imports"], *(["asyncio"] if job["is_async"] else [])]:
            importlib.import_module(module)
        set_rlimits(job["memory_mb"], job["cpu_s"], config["file_bytes"])
        seccomp = install_seccomp() if config.get("seccomp", True) else False
    except Exception as exc:
        frame: dict[str, Any] = {"status": "setup", "reason": f"{type(exc).__name__}: {exc}"}
    else:
        frame = run_job(job, guard, out)
        frame["seccomp"] = seccomp
    frame["stdout"] = out.getvalue()[: out.cap]
    try:
        payload = json.dumps(frame).encode()
        cap = job.get("max_result", 1 << 20)
        if len(payload) + 64 > cap:  # the value fits, but not with the captured output
            small = {"status": "output", "what": "result", "limit": cap, "stdout": ""}
            payload = json.dumps({**small, "seccomp": frame.get("seccomp")}).encode()
        data = b"%s\n%d\n%s" % (nonce.encode(), len(payload), payload)
    except MemoryError:
        os._exit(3)
    write_all(fd, data)
    os._exit(0)
