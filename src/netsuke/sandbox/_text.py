"""Text from a worker made safe to show: control characters escaped, never passed raw.

Captured ``print`` output, a function's exception message and its traceback are the user's
text. Shown on a terminal, in a log or in a browser, raw control characters could move the
cursor, recolour, rewrite or hide what an operator reads (ANSI escapes, carriage returns,
backspaces) or reorder it (bidirectional controls). ``printable`` keeps newlines and tabs and
replaces every other C0 control, DEL, every C1 control, every bidirectional control, the line
separators and lone surrogates (which cannot be encoded as UTF-8, so a reply holding one would
fail) with its Python escape (``\\x1b``, ``\\u202e``, ``\\ud800``): visible, nothing lost.
"""

from __future__ import annotations

import re

__all__ = ["BIDI_CONTROLS", "printable"]

#: Unicode's Bidi_Control characters: ALM, LRM, RLM, LRE..RLO, LRI..PDI.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "\u2028\u2029\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters (but newline and tab) escaped."""
    return _UNSAFE.sub(_escape, text)
