"""The wire codec: round trips, typed refusals at send time, hostile frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsuke.cluster import DecodeError, EncodeError, RemoteError, decode, encode, encode_reason
from netsuke.kernel import Pid, Ref, Shutdown

names = st.text(min_size=1, max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=32)
    | st.builds(Pid, names, st.integers(min_value=0))
    | st.builds(Ref, names, st.integers(min_value=0))
    | st.builds(RemoteError, st.text(min_size=1), st.text())
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        | st.builds(Shutdown, inner)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types (``1 == True == 1.0`` and ``[] == ()`` are not enough)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is Shutdown:
        return same(a.detail, b.detail)
    return bool(a == b)


@given(values)
@settings(max_examples=300, deadline=None)
def test_round_trip_keeps_value_and_type(v: Any) -> None:
    assert same(decode(encode(v)), v)


@given(values)
@settings(max_examples=100, deadline=None)
def test_frames_are_plain_json(v: Any) -> None:
    json.loads(encode(v))


def test_exception_travels_as_type_name_and_message() -> None:
    got = decode(encode(("error", KeyError("k"))))
    assert got == ("error", RemoteError("KeyError", "'k'"))
    assert isinstance(got[1], Exception)
    assert decode(encode(ValueError("bad"))) == RemoteError("ValueError", "bad")


def test_user_dicts_with_dollar_keys_are_not_tags() -> None:
    v = {"$p": ["n", 1], "$t": [1]}
    assert same(decode(encode(v)), v)


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        (Opaque(), "Opaque", "$"),
        ({"a": [1, {2, 3}]}, "set", "$['a'][1]"),
        ({1: "x"}, "int", "$ key"),
        ((1, object()), "object", "$[1]"),
        (float("nan"), "float", "$"),
        (lambda: 1, "function", "$"),
    ],
)
def test_unsendable_values_fail_at_send_time_naming_the_type(
    value: Any, type_name: str, path: str
) -> None:
    with pytest.raises(EncodeError) as ei:
        encode(value)
    assert ei.value.type_name == type_name
    assert ei.value.path == path
    assert type_name in str(ei.value)


def test_cyclic_value_is_refused() -> None:
    a: list[Any] = []
    a.append(a)
    with pytest.raises(EncodeError):
        encode(a)


def test_exit_reason_always_encodes() -> None:
    def wire(r: Any) -> Any:
        return decode(json.dumps(encode_reason(r)).encode())

    o = Opaque()
    assert wire(o) == RemoteError("Opaque", repr(o))
    assert wire("normal") == "normal"
    assert wire(Shutdown("x")) == Shutdown("x")
    assert wire(RuntimeError("boom")) == RemoteError("RuntimeError", "boom")


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"{",
        b'{"$p": ["n"]}',
        b'{"$p": ["", 1]}',
        b'{"$p": ["n", "1"]}',
        b'{"$zz": 1}',
        b'{"$b": "***"}',
        b'{"$e": [1, 2]}',
        b'{"$m": 3}',
        b'{"a": 1, "$t": []}',
        b"NaN",
        b"[1e999]",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_bad_frames_raise_decode_error_only(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(frame)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_decode_or_raise_decode_error(frame: bytes) -> None:
    try:
        decode(frame)
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "v",
    [
        2**64,
        -(2**63) - 1,
        2**63,
        [1.8446744073709552e19, 2**70],
        {"id": Pid("n", 2**80), "r": Ref("n", 2**65)},
        9.3e18,
    ],
)
def test_integers_beyond_64_bits_round_trip_exactly(v: Any) -> None:
    # orjson reads such integers as floats: the frame is read again by the standard library
    assert same(decode(encode(v)), v)


@given(values)
@settings(max_examples=100, deadline=None)
def test_frames_are_the_same_with_and_without_orjson(v: Any) -> None:
    from netsuke.cluster import _codec

    fast = encode(v)
    saved = _codec._FAST_DUMPS, _codec._FAST_LOADS
    _codec._FAST_DUMPS = _codec._FAST_LOADS = None
    try:
        slow = encode(v)
        assert same(decode(fast), v)
    finally:
        _codec._FAST_DUMPS, _codec._FAST_LOADS = saved
    assert json.loads(fast) == json.loads(slow)
    assert same(decode(slow), v)


def test_lone_surrogate_is_refused_at_send_time() -> None:
    with pytest.raises(EncodeError) as ei:
        encode({"a": "\ud800"})
    assert ei.value.type_name == "str"
