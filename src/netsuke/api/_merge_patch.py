"""JSON Merge Patch (RFC 7396) for ``PATCH`` on definitions: change some fields, keep the rest.

* The body is a JSON object sent as ``application/merge-patch+json`` (``application/json`` is
  accepted too); another content type is 415, a body that is not a JSON object 422.
* ``merge_patch(target, patch)``: a member set to ``null`` removes the field (it goes back to
  its default), a nested object is merged member by member, anything else (arrays too)
  replaces the value.
* ``validated(model, data)``: the patched document checked by the route's content model, a
  refusal answered like any body error (422 naming each field, values never echoed).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ._problems import ProblemError

__all__ = ["MERGE_PATCH_JSON", "merge_patch", "openapi_body", "read_merge_patch", "validated"]

MERGE_PATCH_JSON = "application/merge-patch+json"
_ACCEPTED = (MERGE_PATCH_JSON, "application/json")

M = TypeVar("M", bound=BaseModel)


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` applied (RFC 7396, section 2); neither is modified."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


async def read_merge_patch(request: Request) -> dict[str, Any]:
    """The request's merge patch: a JSON object (415 for another content type, 422 when the
    body is not a JSON object)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _ACCEPTED:
        raise ProblemError(
            415,
            "Unsupported media type",
            f"send the patch as {MERGE_PATCH_JSON} (or application/json)",
            type="http",
        )
    raw = await request.body()
    try:
        patch = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(
            422,
            "Validation failed",
            "(root): the body is not valid JSON",
            type="validation",
            errors=[{"field": "(root)", "reason": "not valid JSON"}],
        ) from None
    if not isinstance(patch, dict):
        raise ProblemError(
            422,
            "Validation failed",
            "(root): a merge patch is a JSON object",
            type="validation",
            errors=[{"field": "(root)", "reason": "a merge patch is a JSON object"}],
        )
    return patch


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``; a refusal is raised as a request validation error (422)."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise RequestValidationError(
            [{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        ) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a merge-patch body whose members are ``model``'s fields
    (each optional; ``null`` resets one to its default)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("required", None)
    schema.pop("$defs", None)  # nested models are in components already (the PUT body's)
    content = {"schema": schema}
    return {
        "requestBody": {
            "required": True,
            "content": {MERGE_PATCH_JSON: content, "application/json": content},
        }
    }
