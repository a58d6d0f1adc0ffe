"""The wire codec: what may cross between nodes, and how it is written.

No pickle: a frame from the network is JSON, and only these values round-trip:

* ``None``, ``bool``, ``int``, ``float`` (finite), ``str``, ``bytes``;
* ``list``, ``tuple`` (kept apart from lists) and ``dict`` with ``str`` keys;
* :class:`~netsuke.kernel.Pid`, :class:`~netsuke.kernel.Ref`,
  :class:`~netsuke.kernel.Shutdown`;
* exceptions, which travel as their type name and message and arrive as :class:`RemoteError`.

Anything else fails at send time with :class:`EncodeError`, which names the type and where it
was found. A frame that does not decode raises :class:`DecodeError`; the transport drops and
counts it. Tagged values are one-key objects whose key starts with ``$``; a user dict with such
a key is escaped (``{"$m": {...}}``), so no user data is mistaken for a tag.

The JSON text is written and read by ``orjson`` when it is installed (the ``nats`` extra
installs it), else by the standard library; both write the same frames and read each other's.
Where ``orjson`` cannot say exactly what the standard library would (an integer beyond 64 bits,
which it cannot write and reads as a float; a lone surrogate), the standard library does it for
that frame, so the values that round-trip are the same either way.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from netsuke.kernel import Pid, Ref, Shutdown

__all__ = [
    "DecodeError",
    "EncodeError",
    "RemoteError",
    "decode",
    "dumps",
    "encode",
    "encode_reason",
    "from_wire",
    "read_json",
    "to_wire",
]

_MAX_DEPTH = 100

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the nats extra installs it
    _orjson = None  # type: ignore[assignment]

_STD_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_STD_LOADS: Callable[[str | bytes], Any] = json.loads
_FAST_DUMPS: Callable[[Any], bytes] | None = _orjson.dumps if _orjson is not None else None
_FAST_LOADS: Callable[[bytes], Any] | None = _orjson.loads if _orjson is not None else None
_BIG = 9.2e18  # a float this large and integral may be an integer orjson could not read exactly


class _Inexact(Exception):
    """A float that orjson may have made of a larger integer: read the frame again exactly."""


def dumps(data: Any) -> bytes:
    """Wire data (what :func:`to_wire` returns) as JSON bytes."""
    if _FAST_DUMPS is not None:
        try:
            return _FAST_DUMPS(data)
        except TypeError:
            pass  # an integer beyond 64 bits or a lone surrogate: the standard library decides
    try:
        return _STD_DUMPS(data).encode()
    except UnicodeEncodeError:
        raise EncodeError("str", "$", "not valid UTF-8 (a lone surrogate)") from None


def read_json(frame: bytes, convert: Callable[[Any, bool], Any]) -> Any:
    """``convert(data, exact)`` of the JSON in ``frame``. orjson reads it when installed
    (``exact`` false); if ``convert`` meets a float orjson may have made of an integer beyond 64
    bits it raises ``_Inexact`` and the standard library reads the frame again (``exact``
    true). Raises what ``json.loads`` raises for what is not JSON."""
    if _FAST_LOADS is not None:
        try:
            data = _FAST_LOADS(frame)
        except ValueError:
            pass  # the standard library has the last word on what is JSON
        else:
            try:
                return convert(data, False)
            except _Inexact:
                pass
    return convert(_STD_LOADS(frame), True)


class EncodeError(TypeError):
    """A value cannot be sent to another node. ``type_name`` is the offending type, ``path``
    where it sits in the message (``$`` is the message itself)."""

    def __init__(self, type_name: str, path: str, detail: str = "") -> None:
        self.type_name = type_name
        self.path = path
        extra = f" ({detail})" if detail else ""
        super().__init__(f"cannot send a value of type {type_name} at {path}{extra}")


class DecodeError(ValueError):
    """A frame from a peer is not a valid Netsuke frame."""


class RemoteError(Exception):
    """An exception raised on another node, as it arrives here: its type name and message.

    Two remote errors are equal when type name and message are equal."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is RemoteError
            and other.type_name == self.type_name
            and other.message == self.message
        )

    def __hash__(self) -> int:
        return hash((self.type_name, self.message))


def _exc_parts(e: BaseException) -> tuple[str, str]:
    if type(e) is RemoteError:
        return e.type_name, e.message
    return type(e).__qualname__, str(e)


class _Unfit(Exception):
    """The fast encoder met something it cannot write: the slow one says what and where."""


_FINITE = (float("inf"), float("-inf"))


def _fast(value: Any, depth: int) -> Any:
    """:func:`to_wire` without the bookkeeping of paths (the hot path of every frame)."""
    if depth > _MAX_DEPTH:
        raise _Unfit
    t = type(value)
    if value is None or t is str or t is int or t is bool:
        return value
    if t is list:
        return [_fast(v, depth + 1) for v in value]
    if t is tuple:
        return {"$t": [_fast(v, depth + 1) for v in value]}
    if t is dict:
        out: dict[str, Any] = {}
        escape = False
        for k, v in value.items():
            if type(k) is not str:
                raise _Unfit
            if k[:1] == "$":
                escape = True
            out[k] = _fast(v, depth + 1)
        return {"$m": out} if escape else out
    if t is Pid:
        return {"$p": [value.node, value.id]}
    if t is float:
        if value != value or value in _FINITE:
            raise _Unfit
        return value
    if t is Ref:
        return {"$r": [value.node, value.id]}
    if t is bytes:
        return {"$b": base64.b64encode(value).decode("ascii")}
    if t is Shutdown:
        return {"$s": _fast(value.detail, depth + 1)}
    if isinstance(value, BaseException):
        return {"$e": list(_exc_parts(value))}
    raise _Unfit


def to_wire(value: Any, path: str = "$", depth: int = 0) -> Any:
    """``value`` as plain JSON data, or :class:`EncodeError`."""
    try:
        return _fast(value, depth)
    except _Unfit:
        pass  # the slow walk below raises EncodeError with the type and its path
    return _slow(value, path, depth)


def _slow(value: Any, path: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise EncodeError(type(value).__name__, path, f"nested deeper than {_MAX_DEPTH}")
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise EncodeError("float", path, "not finite")
        return value
    if t is list:
        return [_slow(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if t is dict:
        out: dict[str, Any] = {}
        escape = False
        for k, v in value.items():
            if type(k) is not str:
                raise EncodeError(type(k).__name__, f"{path} key", "dict keys must be str")
            if k.startswith("$"):
                escape = True
            out[k] = _slow(v, f"{path}[{k!r}]", depth + 1)
        return {"$m": out} if escape else out
    if t is tuple:
        return {"$t": [_slow(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if t is Pid:
        return {"$p": [value.node, value.id]}
    if t is Ref:
        return {"$r": [value.node, value.id]}
    if t is Shutdown:
        return {"$s": _slow(value.detail, f"{path}.detail", depth + 1)}
    if t is bytes:
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, BaseException):
        return {"$e": list(_exc_parts(value))}
    raise EncodeError(t.__qualname__, path)


def _pair(v: Any, tag: str, exact: bool = True) -> tuple[str, int]:
    if not exact and type(v) is list and len(v) == 2 and type(v[1]) is float:
        raise _Inexact  # an id beyond 64 bits, read by orjson as a float
    if (
        type(v) is not list
        or len(v) != 2
        or type(v[0]) is not str
        or not v[0]
        or type(v[1]) is not int
    ):
        raise DecodeError(f"bad {tag} value")
    return v[0], v[1]


def from_wire(value: Any, depth: int = 0, exact: bool = True) -> Any:
    """The value that :func:`to_wire` wrote, or :class:`DecodeError`. ``exact`` false: the data
    came from orjson, and an integral float beyond 64-bit integers raises ``_Inexact``."""
    if depth > _MAX_DEPTH + 2:
        raise DecodeError("frame nested too deeply")
    t = type(value)
    if t is list:
        return [from_wire(v, depth + 1, exact) for v in value]
    if t is not dict:
        if t is float:
            if value != value or value in _FINITE:
                raise DecodeError("float not finite")
            if not exact and (value >= _BIG or value <= -_BIG) and value.is_integer():
                raise _Inexact
        return value
    if len(value) == 1:
        ((k, v),) = value.items()
        if k.startswith("$"):
            if k == "$m":
                if type(v) is not dict:
                    raise DecodeError("bad $m value")
                return {kk: from_wire(vv, depth + 1, exact) for kk, vv in v.items()}
            if k == "$t":
                if type(v) is not list:
                    raise DecodeError("bad $t value")
                return tuple(from_wire(x, depth + 1, exact) for x in v)
            if k == "$p":
                return Pid(*_pair(v, k, exact))
            if k == "$r":
                return Ref(*_pair(v, k, exact))
            if k == "$s":
                return Shutdown(from_wire(v, depth + 1, exact))
            if k == "$b":
                if type(v) is not str:
                    raise DecodeError("bad $b value")
                try:
                    return base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise DecodeError("bad $b value") from e
            if k == "$e":
                if type(v) is not list or len(v) != 2 or not all(type(x) is str for x in v):
                    raise DecodeError("bad $e value")
                return RemoteError(v[0], v[1])
            raise DecodeError(f"unknown tag {k!r}")
    for k in value:
        if k.startswith("$"):
            raise DecodeError(f"unescaped key {k!r}")
    return {k: from_wire(v, depth + 1, exact) for k, v in value.items()}


def encode(value: Any) -> bytes:
    """``value`` as a UTF-8 JSON frame. Raises :class:`EncodeError` naming the type."""
    try:
        data = to_wire(value)
    except RecursionError:
        raise EncodeError(type(value).__name__, "$", "too deep or cyclic") from None
    return dumps(data)


def _convert(data: Any, exact: bool) -> Any:
    try:
        return from_wire(data, 0, exact)
    except RecursionError:
        raise DecodeError("frame nested too deeply") from None


def decode(frame: bytes) -> Any:
    """The value in a frame; :class:`DecodeError` for anything that is not a valid frame."""
    try:
        return read_json(frame, _convert)
    except DecodeError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError) as e:
        raise DecodeError(f"not a JSON frame: {type(e).__name__}") from None


def encode_reason(reason: Any) -> Any:
    """An exit reason as wire data; never fails. A reason that does not encode travels as a
    :class:`RemoteError` naming its type (exit signals must always arrive)."""
    try:
        return to_wire(reason)
    except (EncodeError, RecursionError):
        return {"$e": [type(reason).__qualname__, repr(reason)[:200]]}
