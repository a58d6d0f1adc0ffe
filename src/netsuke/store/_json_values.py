"""JSON values that can be stored and served back: one check used at every door.

A value arriving as JSON (a request body, a task payload, a function's arguments or schemas,
an agent's config, a webhook, a chat message) is refused with
``ValidationError(field, reason)`` when it holds:

* a **lone surrogate** (``"\\ud800"`` without its pair) in a string or an object key: valid
  JSON text, but not Unicode, so it can be parsed and even stored, then never encoded again
  (every read or listing that touched it failed);
* **nesting deeper than** ``MAX_JSON_DEPTH`` (64) arrays or objects: serialisers give up far
  below the parser's limit.

``field`` names the first offending place (``payload.items[3].name``); the value itself is
never echoed. ``check_json`` walks the value once, without recursion, so a hostile value
costs time linear in its size and cannot exhaust the stack.

``sanitize_json`` is for values already stored by an older version: lone surrogates become
U+FFFD and containers below the depth limit become the string ``"[nested too deep]"``, so
one poisoned row cannot fail a listing.
"""

from __future__ import annotations

from typing import Any

from ._errors import ValidationError

__all__ = ["MAX_JSON_DEPTH", "TOO_DEEP", "check_json", "json_problem", "sanitize_json"]

MAX_JSON_DEPTH = 64
TOO_DEEP = "[nested too deep]"


def _bad_string(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def json_problem(value: Any, field: str = "") -> tuple[str, str] | None:
    """``(field, reason)`` for the first place in ``value`` that cannot be stored and served
    back (see the module rules), or ``None``. A field path longer than 120 characters is
    cut (``...``)."""
    problem = _first_problem(value, field)
    if problem is None:
        return None
    where, reason = problem
    return (where if len(where) <= 120 else where[:117] + "..."), reason


def _first_problem(value: Any, field: str) -> tuple[str, str] | None:
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _bad_string(item):
                return (
                    path or "(root)",
                    "a lone surrogate (half of a UTF-16 pair, U+D800..U+DFFF): not valid Unicode",
                )
        elif isinstance(item, dict):
            if depth >= MAX_JSON_DEPTH:
                return path or "(root)", f"nested deeper than {MAX_JSON_DEPTH} levels"
            for key in item:
                if isinstance(key, str) and _bad_string(key):
                    return path or "(root)", "an object key with a lone surrogate"
            stack.extend(
                (child, _join(path, str(key)), depth + 1) for key, child in reversed(item.items())
            )
        elif isinstance(item, list | tuple):
            if depth >= MAX_JSON_DEPTH:
                return path or "(root)", f"nested deeper than {MAX_JSON_DEPTH} levels"
            stack.extend(
                (item[index], _join(path, index), depth + 1)
                for index in range(len(item) - 1, -1, -1)
            )
    return None


def check_json(value: Any, field: str = "") -> None:
    """Raise ``ValidationError`` naming the field when ``value`` holds a lone surrogate or
    nests deeper than ``MAX_JSON_DEPTH``; ``field`` prefixes the reported path."""
    problem = json_problem(value, field)
    if problem is not None:
        raise ValidationError(*problem)


def sanitize_json(value: Any, _depth: int = 0) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD and containers below
    ``MAX_JSON_DEPTH`` replaced by ``TOO_DEEP`` (for rows stored before the check)."""
    if isinstance(value, str):
        if not _bad_string(value):
            return value
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict | list | tuple) and _depth >= MAX_JSON_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {sanitize_json(k): sanitize_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize_json(v, _depth + 1) for v in value]
    return value
