"""Store-time validation of function code: the static policy, with line and column.

Checks, in order (the first failure is raised as ``FunctionValidationError``):

1. size: the UTF-8 source is at most ``max_code_bytes``;
2. no bidirectional control character anywhere (U+061C, U+200E, U+200F, U+202A..U+202E,
   U+2066..U+2069: "Trojan Source", code that reads differently from how it runs), nor
   U+2028/U+2029;
3. the source parses (a ``SyntaxError``, ``RecursionError``, ``MemoryError`` or ``ValueError``
   from the parser is a typed refusal: the validator cannot be crashed by nesting);
4. identifiers are NFKC-normal (a fullwidth ``eval`` is refused, not silently read as ``eval``);
5. it defines a top-level function ``name``, async or not as declared;
6. the policy on every node: no dunder names, no attributes starting with ``_``, no frame,
   code, generator, coroutine or traceback attributes (``gi_*``, ``cr_*``, ``ag_*``, ``tb_*``,
   ``f_*``, ``co_*``), no ``format``/``format_map``/``vformat``/``get_field`` (format-string
   attribute traversal), no ``attrgetter``/``methodcaller``; no ``eval``, ``exec``,
   ``compile``, ``open``, ``input``, ``breakpoint``, ``globals``, ``locals``, ``vars``,
   ``dir``, ``help``, ``exit``, ``quit``, ``memoryview``, ``delattr``;
   ``getattr``/``hasattr``/``setattr`` only with a literal public name; no three-argument
   ``type``; no ``except*``; no metaclass or ``type`` base; no string
   literal naming a dunder; no relative import; ``match`` class patterns obey the same rules;
7. imports are in the function's ``allowed_imports``, themselves within the operator's list;
8. parameters match ``input_schema``: plain parameters only (no ``*args``, ``**kwargs`` or
   positional-only), the same names as the schema's ``properties``, a parameter without a
   default exactly when its property is ``required``.

This is one layer of defence; the worker's guards, seccomp filter and namespaces are the others.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import FunctionValidationError
from ._text import BIDI_CONTROLS

__all__ = ["CheckedFunction", "check_function", "derived_metadata", "schema_from_parameters"]

FORBIDDEN_CALLS = frozenset(
    [
        "eval",
        "exec",
        "compile",
        "open",
        "input",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "dir",
        "help",
        "exit",
        "quit",
        "memoryview",
        "delattr",
        "__import__",
    ]
)
FORBIDDEN_ATTRS = frozenset(
    ["format", "format_map", "vformat", "get_field", "attrgetter", "methodcaller", "mro"]
)
#: Refused anywhere in the source, comments and strings included.
INVISIBLE_CONTROLS = BIDI_CONTROLS | {"\u2028", "\u2029"}
_INVISIBLE = re.compile("[" + "".join(sorted(INVISIBLE_CONTROLS)) + "]")
INTROSPECTION = re.compile(r"^(gi|cr|ag|tb|f|co|func)_")
DUNDER_TEXT = re.compile(r"__\w+__")
NAMED_ATTR_CALLS = frozenset({"getattr", "hasattr", "setattr"})


@dataclass(frozen=True)
class CheckedFunction:
    """What validation learned: whether the function is async, and its parameters."""

    is_async: bool
    parameters: tuple[str, ...]
    required: tuple[str, ...]
    annotations: tuple[dict[str, Any], ...] = ()
    """The JSON Schema of each parameter's annotation (``{}`` when absent or not simple)."""
    docstring: str = ""
    """The function's docstring (cleaned, at most 10,000 characters): its default description."""


def _refuse(node: ast.AST | None, reason: str, field: str = "code") -> FunctionValidationError:
    line = getattr(node, "lineno", None)
    col = getattr(node, "col_offset", None)
    return FunctionValidationError(
        field, reason, line=line, column=None if col is None else col + 1
    )


def check_function(
    name: str,
    code: str,
    *,
    is_async: bool | None = None,
    input_schema: Mapping[str, Any] | None = None,
    allowed_imports: Iterable[str] = (),
    operator_imports: Iterable[str] = (),
    max_code_bytes: int = 65536,
) -> CheckedFunction:
    """Validate ``code`` for function ``name``; raise ``FunctionValidationError`` or return
    what was learned."""
    if not name.isidentifier() or name.startswith("_") or len(name) > 64:
        raise FunctionValidationError("name", f"{name!r} is not a public identifier of <= 64 chars")
    size = len(code.encode("utf-8", errors="replace"))
    if size > max_code_bytes:
        raise FunctionValidationError("code", f"{size} bytes is over the cap of {max_code_bytes}")
    _check_controls(code)
    tree = _parse(code)
    _check_identifiers(code)
    allowed = _check_allowed(allowed_imports, operator_imports)
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    ]
    if not found:
        raise FunctionValidationError("code", f"defines no top-level function named {name!r}")
    func = found[-1]
    actual_async = isinstance(func, ast.AsyncFunctionDef)
    if is_async is not None and is_async != actual_async:
        kind = "an async" if actual_async else "a plain (not async)"
        raise _refuse(func, f"is_async={is_async} but the code defines {kind} function")
    for node in ast.walk(tree):
        _check_node(node, allowed)
    params, required = _parameters(func)
    if input_schema is not None:
        _match_schema(func, params, required, input_schema)
    args = func.args
    annotations = tuple(_annotation_schema(a.annotation) for a in (*args.args, *args.kwonlyargs))
    return CheckedFunction(
        actual_async, tuple(params), tuple(required), annotations, _docstring(func)
    )


def _docstring(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return (ast.get_docstring(func, clean=True) or "")[:10_000]


def derived_metadata(name: str, code: str) -> tuple[str, dict[str, Any] | None]:
    """What storing ``code`` without a description or input schema would fill in: the
    function's docstring and the schema of its parameters (``("", None)`` when ``code`` does
    not define it plainly). No policy check: for comparing with what is stored."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "", None
    found = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    ]
    if not found:
        return "", None
    func = found[-1]
    try:
        params, required = _parameters(func)
    except FunctionValidationError:
        return _docstring(func), None
    args = func.args
    annotations = tuple(_annotation_schema(a.annotation) for a in (*args.args, *args.kwonlyargs))
    checked = CheckedFunction(isinstance(func, ast.AsyncFunctionDef), tuple(params),
                              tuple(required), annotations)  # fmt: skip
    return _docstring(func), schema_from_parameters(checked)


_SIMPLE_TYPES = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}


def _annotation_schema(node: ast.expr | None, depth: int = 0) -> dict[str, Any]:
    """The JSON Schema of a simple annotation (``int``, ``str``, ``list[str]``, ...), else
    ``{}`` (anything goes; the function checks for itself)."""
    if node is None or depth > 4:
        return {}
    if isinstance(node, ast.Name) and node.id in _SIMPLE_TYPES:
        return {"type": _SIMPLE_TYPES[node.id]}
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("list", "List")
    ):
        items = _annotation_schema(node.slice, depth + 1)
        return {"type": "array", "items": items} if items else {"type": "array"}
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("dict", "Dict")
    ):
        return {"type": "object"}
    return {}


def schema_from_parameters(checked: CheckedFunction) -> dict[str, Any]:
    """An input schema naming the parameters, typed from their simple annotations (``int`` is
    an integer, ``list[str]`` an array of strings, ...), used when none was given."""
    types = checked.annotations or tuple({} for _ in checked.parameters)
    return {
        "type": "object",
        "properties": dict(zip(checked.parameters, types, strict=True)),
        "required": list(checked.required),
        "additionalProperties": False,
    }


def _parse(code: str) -> ast.Module:
    try:
        return ast.parse(code, filename="<function>")
    except SyntaxError as exc:
        raise FunctionValidationError(
            "code", f"syntax error: {exc.msg}", line=exc.lineno, column=exc.offset
        ) from None
    except (RecursionError, MemoryError):
        raise FunctionValidationError("code", "too deeply nested or too large to parse") from None
    except ValueError as exc:  # null bytes
        raise FunctionValidationError("code", f"cannot be parsed: {exc}") from None


def _check_controls(code: str) -> None:
    found = _INVISIBLE.search(code)
    if found is None:
        return
    start = found.start()
    line = code.count("\n", 0, start) + 1
    column = start - (code.rfind("\n", 0, start) + 1) + 1
    raise FunctionValidationError(
        "code",
        f"bidirectional or line-separator control character U+{ord(found.group()):04X} is not "
        "allowed (the code would read differently from how it runs)",
        line=line,
        column=column,
    )


def _check_identifiers(code: str) -> None:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if (
                tok.type == tokenize.NAME
                and not tok.string.isascii()
                and unicodedata.normalize("NFKC", tok.string) != tok.string
            ):
                raise FunctionValidationError(
                    "code",
                    f"identifier {tok.string!r} is not NFKC-normalised",
                    line=tok.start[0],
                    column=tok.start[1] + 1,
                )
    except (tokenize.TokenError, SyntaxError):
        pass  # the parser accepted it; tokenize is only stricter about layout


def _check_allowed(allowed_imports: Iterable[str], operator_imports: Iterable[str]) -> set[str]:
    operator = set(operator_imports)
    allowed = set()
    for i, module in enumerate(allowed_imports):
        if not all(part.isidentifier() for part in module.split(".")) or module.startswith("_"):
            raise FunctionValidationError(f"allowed_imports[{i}]", f"{module!r} is no module name")
        if module not in operator and module.split(".")[0] not in operator:
            raise FunctionValidationError(
                f"allowed_imports[{i}]", f"{module!r} is not in the operator's allow-list"
            )
        allowed.add(module)
    return allowed


def _is_dunder(text: str) -> bool:
    return text.startswith("__") and text.endswith("__") and len(text) > 4


def _check_node(node: ast.AST, allowed: set[str]) -> None:
    if isinstance(node, ast.Name):
        if _is_dunder(node.id) or node.id.startswith("__"):
            raise _refuse(node, f"name {node.id!r} is not allowed (dunder)")
        if node.id in FORBIDDEN_CALLS:
            raise _refuse(node, f"{node.id!r} is not allowed")
    elif isinstance(node, ast.Attribute):
        _check_attr(node, node.attr)
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        if node.name.startswith("__"):
            raise _refuse(node, f"definition name {node.name!r} is not allowed")
        if isinstance(node, ast.ClassDef):
            if node.keywords:
                raise _refuse(node, "class keywords (metaclasses) are not allowed")
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id == "type":
                    raise _refuse(base, "subclassing type (a metaclass) is not allowed")
    elif isinstance(node, ast.arg):
        if node.arg.startswith("__"):
            raise _refuse(node, f"parameter name {node.arg!r} is not allowed")
    elif isinstance(node, ast.keyword):
        if node.arg is not None and node.arg.startswith("__"):
            raise _refuse(node, f"keyword {node.arg!r} is not allowed")
    elif isinstance(node, ast.Global | ast.Nonlocal):
        for n in node.names:
            if n.startswith("__"):
                raise _refuse(node, f"name {n!r} is not allowed (dunder)")
    elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
        if DUNDER_TEXT.search(text):
            raise _refuse(node, "string literals naming dunder attributes are not allowed")
    elif isinstance(node, ast.Call):
        _check_call(node)
    elif isinstance(node, ast.TryStar):
        raise _refuse(node, "except* is not allowed")
    elif isinstance(node, ast.MatchClass):
        for attr in node.kwd_attrs:
            _check_attr(node, attr)
    elif isinstance(node, ast.Import | ast.ImportFrom):
        _check_import(node, allowed)


def _check_attr(node: ast.AST, attr: str) -> None:
    if attr.startswith("_"):
        raise _refuse(node, f"attribute {attr!r} is not allowed (private or dunder)")
    if INTROSPECTION.match(attr):
        raise _refuse(node, f"attribute {attr!r} is not allowed (frame, code or generator)")
    if attr in FORBIDDEN_ATTRS:
        raise _refuse(node, f"attribute {attr!r} is not allowed")


def _check_call(node: ast.Call) -> None:
    func = node.func
    if isinstance(func, ast.Name) and func.id in NAMED_ATTR_CALLS:
        if len(node.args) < 2:
            raise _refuse(node, f"{func.id} needs a literal attribute name")
        attr = node.args[1]
        if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
            raise _refuse(attr, f"computed {func.id} is not allowed; use a literal name")
        _check_attr(attr, attr.value)
    if isinstance(func, ast.Name) and func.id == "type" and len(node.args) != 1:
        raise _refuse(node, "type() with other than one argument is not allowed")


def _check_import(node: ast.Import | ast.ImportFrom, allowed: set[str]) -> None:
    if isinstance(node, ast.ImportFrom):
        if node.level or node.module is None:
            raise _refuse(node, "relative imports are not allowed")
        modules = [node.module]
        for alias in node.names:
            if alias.name.startswith("_") or alias.name == "*":
                raise _refuse(node, f"importing {alias.name!r} is not allowed")
    else:
        modules = [alias.name for alias in node.names]
    for module in modules:
        if module not in allowed and module.split(".")[0] not in allowed:
            raise _refuse(node, f"imports {module!r}, which is not in allowed_imports")
        if any(part.startswith("_") for part in module.split(".")):
            raise _refuse(node, f"imports private module {module!r}")


def _parameters(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[str], list[str]]:
    args = func.args
    if args.vararg or args.kwarg or args.posonlyargs:
        raise _refuse(func, "*args, **kwargs and positional-only parameters are not allowed")
    positional = args.args
    first_default = len(positional) - len(args.defaults)
    params = [a.arg for a in positional] + [a.arg for a in args.kwonlyargs]
    required = [a.arg for i, a in enumerate(positional) if i < first_default]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return params, required


def _match_schema(
    func: ast.AST, params: list[str], required: list[str], schema: Mapping[str, Any]
) -> None:
    if schema.get("type") not in (None, "object"):
        raise FunctionValidationError("input_schema", "must describe an object (type: object)")
    props = schema.get("properties") or {}
    if not isinstance(props, Mapping):
        raise FunctionValidationError("input_schema", "properties must be an object")
    missing = sorted(set(props) - set(params))
    extra = sorted(set(params) - set(props))
    if missing:
        raise _refuse(func, f"input_schema properties {missing} are not parameters", "input_schema")
    if extra:
        raise _refuse(
            func, f"parameters {extra} are not in input_schema properties", "input_schema"
        )
    schema_required = set(schema.get("required") or [])
    if schema_required != set(required):
        raise _refuse(
            func,
            f"required properties {sorted(schema_required)} differ from the parameters without "
            f"defaults {sorted(required)}",
            "input_schema",
        )
