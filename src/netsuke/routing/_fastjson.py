"""Reading the queue backends' JSON fast and exactly: orjson where it reads exactly what
``json.loads`` would, else the standard library.

orjson reads an integer beyond 64 bits as a float (``json.loads`` keeps it exact) and refuses
NaN, the infinities and lone surrogates (``json.loads`` accepts them): a document with a run of
19 digits or more, or one orjson refuses, is read by the standard library."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson  # (the redis and nats extras install it)
except ImportError:  # pragma: no cover - the extras install it
    _orjson = None  # type: ignore[assignment]

__all__ = ["loads_exact"]

_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # digits: 0, the rest: space
_LONG = b"0" * 19


def loads_exact(raw: bytes) -> Any:
    """``json.loads(raw)``, by orjson when it gives the same values."""
    if _orjson is not None and raw.translate(_DIGITS).find(_LONG) < 0:
        try:
            return _orjson.loads(raw)
        except ValueError:
            pass
    return json.loads(raw)
