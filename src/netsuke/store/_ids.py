"""Time-ordered row identifiers: UUIDv7 (RFC 9562).

A random (version 4) primary key puts every insert on a random leaf of its B-tree: once a
table is large, on a page that is not in the cache and that splits in the middle. A version 7
id begins with the Unix time in milliseconds, so new rows land at the right edge of the index
as with an autoincrement key, while ids stay unique across processes and nodes without any
coordination (74 random bits per id). Ids are still opaque strings in the canonical
8-4-4-4-12 form: nothing may parse a time out of them, and rows written with version 4 ids
before this stay valid.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "new_ids"]

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = (1 << 12) - 1
_RAND_B = (1 << 62) - 1
_MS = (1 << 48) - 1


def new_id() -> str:
    """A new UUIDv7 string: 48 bits of Unix milliseconds, version, 12 + 62 random bits."""
    ms = time.time_ns() // 1_000_000
    r = int.from_bytes(os.urandom(10), "big")
    value = (ms & _MS) << 80 | _VERSION | (r >> 68 & _RAND_A) << 64 | _VARIANT | (r & _RAND_B)
    x = f"{value:032x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def new_ids(count: int) -> list[str]:
    """``count`` new UUIDv7 strings, as ``new_id`` makes them, with one read of the system's
    random source for all (a batch of submits: one system call, not one per id)."""
    ms = (time.time_ns() // 1_000_000 & _MS) << 80 | _VERSION | _VARIANT
    rand = os.urandom(10 * count)
    out: list[str] = []
    for i in range(0, 10 * count, 10):
        r = int.from_bytes(rand[i : i + 10], "big")
        x = f"{ms | (r >> 68 & _RAND_A) << 64 | (r & _RAND_B):032x}"
        out.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}")
    return out
