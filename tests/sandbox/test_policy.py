"""Store-time validation: typed refusals with line and column, and a validator that nothing
crashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsuke.sandbox import DEFAULT_ALLOWED_IMPORTS, FunctionValidationError, check_function


def refuse(code: str, **kw: object) -> FunctionValidationError:
    with pytest.raises(FunctionValidationError) as info:
        check_function("f", code, operator_imports=DEFAULT_ALLOWED_IMPORTS, **kw)  # type: ignore[arg-type]
    return info.value


def test_accepts_plain_and_async_functions_and_reports_parameters() -> None:
    checked = check_function("f", "def f(a, b=1, *, c):\n    return a\n")
    assert checked.parameters == ("a", "b", "c") and checked.required == ("a", "c")
    assert not checked.is_async
    assert check_function("f", "async def f():\n    return 1\n").is_async


def test_syntax_errors_carry_line_and_column() -> None:
    error = refuse("def f():\n    return (1,\n")
    assert error.field == "code" and error.line is not None and error.column is not None


def test_attribute_refusal_points_at_the_expression() -> None:
    error = refuse("def f(x):\n    y = 1\n    return x.gi_frame\n")
    assert (error.line, error.column) == (3, 12)
    assert "gi_frame" in error.reason


def test_parameters_must_match_the_input_schema() -> None:
    schema = {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"]}
    check_function("f", "def f(a, b=2):\n    return a\n", input_schema=schema)
    assert refuse("def f(a):\n    return a\n", input_schema=schema).field == "input_schema"
    assert "required" in refuse("def f(a, b):\n    return a\n", input_schema=schema).reason
    assert "*args" in refuse("def f(*args):\n    return 1\n").reason
    assert "*args" in refuse("def f(**kw):\n    return 1\n").reason
    assert "*args" in refuse("def f(a, /):\n    return 1\n").reason


def test_imports_within_the_function_and_operator_lists() -> None:
    code = "import collections.abc\nfrom json import dumps\n\ndef f():\n    return dumps([])\n"
    check_function(
        "f", code, allowed_imports=["json", "collections"], operator_imports=DEFAULT_ALLOWED_IMPORTS
    )
    assert refuse(code, allowed_imports=["json"]).line == 1
    assert (
        refuse("def f():\n    return 1\n", allowed_imports=["socket"]).field == "allowed_imports[0]"
    )


def test_names_and_sizes() -> None:
    with pytest.raises(FunctionValidationError) as info:
        check_function("_hidden", "def _hidden():\n    pass\n")
    assert info.value.field == "name"
    with pytest.raises(FunctionValidationError):
        check_function("f", "def f():\n    pass\n" + "#" * 100, max_code_bytes=50)
    assert "no top-level function" in refuse("def g():\n    pass\n").reason
    assert refuse("def f():\n    return 1\n\x00").field == "code"  # a null byte in the source


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=20000),
    opener=st.sampled_from(["(", "[", "{", "-", "not ", "lambda: ", "f(", "x["]),
)
def test_the_validator_cannot_be_crashed_by_nesting(depth: int, opener: str) -> None:
    closer = {"(": ")", "[": "]", "{": "}", "f(": ")", "x[": "]"}.get(opener, "")
    code = "def f():\n    return " + opener * depth + "1" + closer * depth + "\n"
    try:
        check_function("f", code)
    except FunctionValidationError as exc:
        assert exc.field == "code"  # noqa: PT017


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_accepted_or_refused_with_a_typed_error(code: str) -> None:
    try:
        check_function("f", code)
    except FunctionValidationError:
        pass
