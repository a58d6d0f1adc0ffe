"""Regressions of the sandbox's in-language layer (issue 14, item 12): format-string attribute
traversal, writable module views, Trojan Source, a huge result, raw control characters in
captured output, and ``Sandbox.run`` skipping the store-time validator.

Each runtime attempt is followed by a benign control call in the same sandbox, which must pass.
Attempts marked ``validate=False`` run past the static policy on purpose, to show the worker's
guards hold on their own."""

from __future__ import annotations

import json

import pytest

from netsuke.sandbox import (
    FunctionRaisedError,
    FunctionStore,
    FunctionValidationError,
    InvalidResultError,
    OutputLimitError,
    Sandbox,
    SandboxViolationError,
    WorkerCrashedError,
    _policy,
    _worker,
    check_function,
)
from netsuke.sandbox._outcome import decode_frame
from netsuke.sandbox._text import BIDI_CONTROLS, printable
from netsuke.store import NotFoundError, Store

CONTROL = "def control(x: int) -> int:\n    return x * 2\n"
U = '    u = "_" * 2\n'


def fn(body: str, *, header: str = "") -> str:
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"{header}\ndef attempt():\n{lines}\n"


async def _control(sandbox: Sandbox) -> None:
    assert (await sandbox.run(CONTROL, "control", {"x": 4}, is_async=False)).value == 8


# ------------------------------------------------------ a) format-string attribute traversal
GET_FIELD = fn(
    'u = "_" * 2\n'
    "f = string.Formatter()\n"
    'name = "0." + u + "class" + u + "." + u + "base" + u + "." + u + "subclasses" + u\n'
    "found, _ = f.get_field(name, [()], {})\n"
    "return len(found())",
    header="import string",
)


def test_get_field_is_refused_at_store_time() -> None:
    with pytest.raises(FunctionValidationError) as info:
        check_function(
            "attempt", GET_FIELD, allowed_imports=["string"], operator_imports=["string"]
        )
    assert "get_field" in info.value.reason and info.value.line == 6


async def test_get_field_with_a_runtime_dunder_is_a_violation(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxViolationError) as info:
        await sandbox.run(
            GET_FIELD, "attempt", {}, is_async=False, allowed_imports=["string"], validate=False
        )
    assert "__class__" in info.value.reason
    await _control(sandbox)


FORMAT_ATTEMPTS = {
    # vformat through the guarded Formatter, the field name built at run time
    "vformat": fn(
        'u = "_" * 2\nreturn string.Formatter().vformat("{0." + u + "class" + u + "}", [()], {})',
        header="import string",
    ),
    # a subclass cannot reach an unguarded get_field through super()
    "subclass_super": fn(
        'u = "_" * 2\n'
        "class F(string.Formatter):\n"
        "    pass\n"
        'return super(F, F()).get_field("0." + u + "class" + u, [()], {})',
        header="import string",
    ),
}


@pytest.mark.parametrize("case", sorted(FORMAT_ATTEMPTS))
async def test_formatter_lookups_obey_the_guard(sandbox: Sandbox, case: str) -> None:
    with pytest.raises(SandboxViolationError):
        await sandbox.run(
            FORMAT_ATTEMPTS[case],
            "attempt",
            {},
            is_async=False,
            allowed_imports=["string"],
            validate=False,
        )
    await _control(sandbox)


# These pass the static policy (no forbidden attribute is written out), so only the worker's
# guards stop them.
RUNTIME_ONLY = {
    "str_format_by_alias": fn(
        'u = "_" * 2\nget = getattr\nm = get("{0." + u + "class" + u + "}", "for" + "mat")\n'
        "return str(m(()))"
    ),
    "format_map_by_alias": fn(
        'u = "_" * 2\nget = getattr\nm = get("{x." + u + "class" + u + "}", "format" + "_map")\n'
        "return str(m({'x': ()}))"
    ),
    # dataclasses compiles annotation names (any string, in a class built at run time) into
    # the methods it generates, executed in the globals of the module the class names
    "dataclass_field_name_injection": fn(
        'u = "_" * 2\n'
        "make = type\n"
        "X = make('X', (), {u + 'annotations' + u: {'a': int}, u + 'module' + u: 'json'})\n"
        "try:\n"
        "    dataclasses.dataclass(X)\n"
        "except BaseException as exc:\n"
        "    return repr(exc)\n"
        "return 'built'",
        header="import dataclasses",
    ),
    # update_wrapper copies attributes named at run time: a function's globals into ours
    "update_wrapper_copies_globals": fn(
        'u = "_" * 2\n'
        "def w():\n"
        "    pass\n"
        "functools.update_wrapper(w, random.shuffle, assigned=(), updated=(u + 'globals' + u,))\n"
        "return probe()",
        header="import functools, random\n\ndef probe():\n    return _os.getcwd()\n",
    ),
    "wraps_assigns_globals": fn(
        'u = "_" * 2\n'
        "def w():\n"
        "    pass\n"
        "functools.wraps(random.shuffle, assigned=(u + 'globals' + u,))(w)\n"
        "return 1",
        header="import functools, random",
    ),
    "type_with_three_arguments_by_alias": fn(
        'u = "_" * 2\nmake = type\nX = make("X", (), {u + "init" + u: None})\nreturn 1'
    ),
    "typing_evaluates_a_string": fn(
        'u = "_" * 2\n'
        "expr = u + 'import' + u + \"('os').getcwd()\"\n"
        "class C:\n"
        "    x: expr\n"
        "return str(typing.get_type_hints(C, localns={'expr': expr}))",
        header="import typing",
    ),
}


@pytest.mark.parametrize("case", sorted(RUNTIME_ONLY))
async def test_runtime_attribute_traversal_past_the_static_policy(
    functions: FunctionStore, case: str
) -> None:
    imports = {"typing_evaluates_a_string": ["typing"],
               "dataclass_field_name_injection": ["dataclasses"],
               "update_wrapper_copies_globals": ["functools", "random"],
               "wraps_assigns_globals": ["functools", "random"]}.get(case, [])  # fmt: skip
    await functions.store_function(name="attempt", code=RUNTIME_ONLY[case], allowed_imports=imports)
    with pytest.raises(SandboxViolationError):
        await functions.execute_function("attempt", {})
    await functions.store_function(name="control", code=CONTROL)
    assert await functions.execute_function("control", {"x": 2}) == 4


async def test_the_guarded_formatter_still_formats(sandbox: Sandbox) -> None:
    code = fn(
        "f = string.Formatter()\n"
        "value, first = f.get_field('0.real', [3], {})\n"
        "return [value, first, [p[1] for p in f.parse('a{x}b')]]",
        header="import string",
    )
    result = await sandbox.run(
        code, "attempt", {}, is_async=False, allowed_imports=["string"], validate=False
    )
    assert result.value == [3, 0, ["x", None]]


async def test_named_tuples_still_work(sandbox: Sandbox) -> None:
    # collections.namedtuple generates code with exec: allowed from that module only
    code = fn(
        "P = collections.namedtuple('P', 'x y')\n"
        "class Q(typing.NamedTuple):\n"
        "    a: int\n"
        "return [P(1, 2).y, Q(5).a]",
        header="import collections, typing",
    )
    imports = ["collections", "typing"]
    result = await sandbox.run(code, "attempt", {}, is_async=False, allowed_imports=imports)
    assert result.value == [2, 5]


async def test_functools_wraps_still_wraps(sandbox: Sandbox) -> None:
    code = fn(
        "def inner(x):\n"
        "    return x + 1\n"
        "inner.tag = 'kept'\n"
        "@functools.wraps(inner)\n"
        "def outer(x):\n"
        "    return inner(x) * 10\n"
        "def other():\n"
        "    pass\n"
        "functools.update_wrapper(other, inner, assigned=('tag',))\n"
        "return [outer(1), outer.tag, other.tag]",
        header="import functools",
    )
    result = await sandbox.run(code, "attempt", {}, is_async=False, allowed_imports=["functools"])
    assert result.value == [20, "kept", "kept"]


async def test_type_still_answers_the_type_of_a_value(sandbox: Sandbox) -> None:
    code = fn(
        "class C:\n"
        "    pass\n"
        "return [type(1) is int, type(C()) is C, isinstance(int, type), isinstance(3, type),\n"
        "        issubclass(type(C), type), isinstance(C, type), type('s') == str]"
    )
    result = await sandbox.run(code, "attempt", {}, is_async=False)
    assert result.value == [True, True, True, False, True, True, True]


def test_the_worker_refuses_the_same_attributes_as_the_policy() -> None:
    assert _worker.FORBIDDEN_ATTRS == _policy.FORBIDDEN_ATTRS


# --------------------------------------------------------------- b) read-only module views
async def test_module_views_are_read_only(sandbox: Sandbox) -> None:
    code = fn(
        "out = []\n"
        "def change(how):\n"
        "    try:\n"
        "        how()\n"
        "        out.append('changed')\n"
        "    except AttributeError:\n"
        "        out.append('refused')\n"
        "def assign():\n"
        "    json.dumps = len\n"
        "def remove():\n"
        "    del json.dumps\n"
        "def by_setattr():\n"
        "    setattr(json, 'loads', len)\n"
        "def on_the_class():\n"
        "    type(json).dumps = len\n"
        "def new_name():\n"
        "    json.extra = 1\n"
        "for how in (assign, remove, by_setattr, on_the_class, new_name):\n"
        "    change(how)\n"
        "return [out, json.dumps({'a': 1}), json.loads('[1]')]",
        header="import json",
    )
    result = await sandbox.run(code, "attempt", {}, is_async=False, allowed_imports=["json"])
    assert result.value == [["refused"] * 5, '{"a": 1}', [1]]
    await _control(sandbox)


async def test_a_write_to_a_module_view_is_an_error(sandbox: Sandbox) -> None:
    code = fn("json.dumps = 1\nreturn json.dumps", header="import json")
    with pytest.raises(FunctionRaisedError) as info:
        await sandbox.run(code, "attempt", {}, is_async=False, allowed_imports=["json"])
    assert info.value.exc_type == "AttributeError" and "read-only" in info.value.message


# --------------------------------------------------------------------- c) Trojan Source
@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS), ids=lambda c: f"U+{ord(c):04X}")
def test_bidi_controls_are_refused_with_their_place(char: str) -> None:
    in_string = f'def attempt():\n    s = "admin{char} # user"\n    return s\n'
    with pytest.raises(FunctionValidationError) as info:
        check_function("attempt", in_string)
    assert info.value.field == "code" and f"U+{ord(char):04X}" in info.value.reason
    assert (info.value.line, info.value.column) == (2, 15)
    in_comment = f"def attempt():\n    return 1  # {char}\n"
    with pytest.raises(FunctionValidationError):
        check_function("attempt", in_comment)


async def test_trojan_source_is_not_stored(functions: FunctionStore, store: Store) -> None:
    code = (
        "def attempt(access_level: str) -> bool:\n"
        '    if access_level != "user\u202e \u2066# admin\u2069 \u2066":\n'
        "        return True\n"
        "    return False\n"
    )
    with pytest.raises(FunctionValidationError):
        await functions.store_function(name="attempt", code=code)
    with pytest.raises(NotFoundError):
        await store.functions.get("attempt")


# ------------------------------------------------------------------------- d) huge result
async def test_a_huge_result_is_an_output_limit(sandbox: Sandbox) -> None:
    # 100 MB fits in the worker's 192 MB; encoding it again for the frame would not
    code = fn("return 'x' * 100_000_000")
    with pytest.raises(OutputLimitError) as info:
        await sandbox.run(code, "attempt", {}, is_async=False, memory_mb=192)
    assert info.value.what == "result" and info.value.limit == sandbox.config.max_result_bytes
    await _control(sandbox)


async def test_a_result_over_the_frame_cap_is_an_output_limit(sandbox: Sandbox) -> None:
    code = fn("return [{'k': 'v' * 1000} for _ in range(2000)]")
    with pytest.raises(OutputLimitError) as info:
        await sandbox.run(code, "attempt", {}, is_async=False)
    assert info.value.what == "result"
    await _control(sandbox)


async def test_a_result_just_under_the_cap_passes(sandbox: Sandbox) -> None:
    code = fn("return 'x' * 500_000")
    assert len((await sandbox.run(code, "attempt", {}, is_async=False)).value) == 500_000


# ------------------------------------------------------ e) control characters in output
async def test_captured_output_and_errors_escape_control_characters(
    functions: FunctionStore,
) -> None:
    code = fn(
        "print('\\x1b[31mred\\x1b[0m\\rover\\x08\\u202eevil\\ttab')\nprint('next line')\nreturn 1"
    )
    await functions.store_function(name="attempt", code=code)
    result = await functions.execute("attempt", {})
    assert result.stdout == "\\x1b[31mred\\x1b[0m\\x0dover\\x08\\u202eevil\ttab\nnext line\n"
    assert "\x1b" not in result.stdout
    raising = fn("raise ValueError('\\x1b]0;pwned\\x07\\x1b[2J')")
    await functions.store_function(name="raising", code=raising.replace("attempt", "raising"))
    with pytest.raises(FunctionRaisedError) as info:
        await functions.execute_function("raising", {})
    assert "\x1b" not in info.value.message and "\x1b" not in info.value.traceback
    assert "\\x1b]0;pwned\\x07" in info.value.message


def test_printable_keeps_text_and_escapes_controls() -> None:
    assert printable("plain text, ünïcode ✓\n\tend") == "plain text, ünïcode ✓\n\tend"
    assert printable("\x00\x1b\x7f\x85\u2028") == "\\x00\\x1b\\x7f\\x85\\u2028"


# --------------------------------------------------------- f) Sandbox.run validates by default
async def test_sandbox_run_applies_the_store_time_validator(sandbox: Sandbox) -> None:
    with pytest.raises(FunctionValidationError) as info:
        await sandbox.run("def attempt():\n    return eval('1')\n", "attempt", {}, is_async=False)
    assert "eval" in info.value.reason
    with pytest.raises(FunctionValidationError):
        await sandbox.run(CONTROL, "control", {"x": 1}, is_async=True)  # not an async def
    with pytest.raises(FunctionValidationError):
        await sandbox.run("def f():\n    return 1  # \u202e\n", "f", {}, is_async=False)
    # explicit opt-out: the runtime guards alone (eval is not a builtin in the worker)
    with pytest.raises(FunctionRaisedError) as raised:
        await sandbox.run(
            "def attempt():\n    return eval('1')\n", "attempt", {}, is_async=False, validate=False
        )
    assert raised.value.exc_type == "NameError"
    await _control(sandbox)


async def test_a_stored_row_that_bypassed_validation_does_not_run(
    functions: FunctionStore, store: Store
) -> None:
    code = fn(
        'u = "_" * 2\nf = string.Formatter()\nreturn str(f.get_field("0." + u + "class" + u, [()], {}))',
        header="import string",
    )
    draft = {"name": "attempt", "code": code, "allowed_imports": ["string"], "is_async": False}
    await store.functions.put(draft)  # written around FunctionStore.store_function
    with pytest.raises(FunctionValidationError):
        await functions.execute_function("attempt", {})
    executions = await store.executions.list(kind="function_call")
    assert [(e.status, e.details["outcome"]) for e in executions.items] == [("failed", "refused")]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"status": "violation", "reason": "x\x1b[2Jy"}, SandboxViolationError),
        ({"status": "error", "type": "InvalidResult", "message": "x\x1b[2Jy"}, InvalidResultError),
        ({"status": "setup", "reason": "x\x1b[2Jy"}, WorkerCrashedError),
    ],
)
def test_every_worker_text_in_an_error_is_escaped(body: dict[str, str], error: type) -> None:
    payload = json.dumps(body).encode()
    frame = b"n0nce\n%d\n%s" % (len(payload), payload)
    with pytest.raises(error) as info:
        decode_frame(frame, "n0nce", 0, "", 64, 1.0)
    assert "\x1b" not in str(info.value) and "\\x1b[2J" in str(info.value)
    with pytest.raises(WorkerCrashedError) as crashed:
        decode_frame(None, "n0nce", 1, "boom\x1b[2J", 64, 1.0)
    assert "\x1b" not in crashed.value.detail


# ------------------------------------- d') a result the host could not store or serve back
RESULTS_REFUSED = {
    "lone_surrogate": "return ['ok', chr(0xD800)]",
    "lone_surrogate_key": "return {chr(0xDC00): 1}",
    "too_deep": "v = []\nfor _ in range(150):\n    v = [v]\nreturn v",
}


@pytest.mark.parametrize("case", sorted(RESULTS_REFUSED))
async def test_a_result_the_host_cannot_serve_is_an_invalid_result(
    sandbox: Sandbox, case: str
) -> None:
    with pytest.raises(InvalidResultError) as info:
        await sandbox.run(fn(RESULTS_REFUSED[case]), "attempt", {}, is_async=False)
    assert ("deeper than 100" in info.value.reason) == (case == "too_deep")
    await _control(sandbox)


async def test_lone_surrogates_in_output_are_escaped(sandbox: Sandbox) -> None:
    result = await sandbox.run(fn("print(chr(0xDC00))\nreturn 1"), "attempt", {}, is_async=False)
    assert result.stdout == "\\udc00\n"
    result.stdout.encode("utf-8")  # servable


def test_a_result_nested_to_the_limit_passes() -> None:
    value: list[object] = []
    for _ in range(99):
        value = [value]
    payload = json.dumps({"status": "ok", "value": value}).encode()
    body = decode_frame(b"n\n%d\n%s" % (len(payload), payload), "n", 0, "", 64, 1.0)
    assert body["value"] == value
