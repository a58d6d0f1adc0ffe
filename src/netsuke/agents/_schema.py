"""Input and output schemas: pydantic models or JSON Schema.

Input: without a schema a message is a non-empty ``str``. With one, a message is a ``dict``, a
JSON ``str`` or an instance of the model; it is validated before the model is called (failure:
``InvalidInputError`` with every error, nothing runs) and sent to the model as JSON.

Output: a pydantic model class is the run's ``output_type``; a JSON Schema becomes a
``StructuredDict`` whose values are checked with ``jsonschema``. Failures go back to the model
as retry prompts, ``output_retries`` times, then the turn fails with ``OutputValidationError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.output import StructuredDict

from ._errors import AgentConfigError, InvalidInputError

__all__ = ["InputSchema", "json_schema_validator", "output_type"]


class InputSchema:
    """Validates messages against a pydantic model or a JSON Schema."""

    __slots__ = ("model", "validator")

    def __init__(self, schema: type[BaseModel] | Mapping[str, Any]) -> None:
        self.model: type[BaseModel] | None = None
        self.validator: jsonschema.protocols.Validator | None = None
        if isinstance(schema, Mapping):
            self.validator = json_schema_validator(dict(schema), "input_schema")
        else:
            self.model = schema

    def prompt(self, agent: str, message: Any) -> str:
        """The prompt for ``message`` as JSON, or ``InvalidInputError``."""
        if self.model is not None:
            if isinstance(message, self.model):
                return message.model_dump_json()
            try:
                if isinstance(message, str | bytes):
                    value = self.model.model_validate_json(message)
                else:
                    value = self.model.model_validate(message)
            except ValidationError as e:
                raise InvalidInputError(
                    agent,
                    [
                        f"{'.'.join(map(str, err['loc'])) or '$'}: {err['msg']}"
                        for err in e.errors()
                    ],
                ) from None
            return value.model_dump_json()
        assert self.validator is not None
        if isinstance(message, str | bytes):
            try:
                message = json.loads(message)
            except ValueError as e:
                raise InvalidInputError(agent, [f"$: not JSON ({e})"]) from None
        elif isinstance(message, BaseModel):
            message = message.model_dump(mode="json")
        errors = [
            f"{'.'.join(map(str, err.absolute_path)) or '$'}: {err.message}"
            for err in self.validator.iter_errors(message)
        ]
        if errors:
            raise InvalidInputError(agent, sorted(errors))
        try:
            return json.dumps(message)
        except TypeError as e:
            raise InvalidInputError(agent, [f"$: not JSON-serialisable ({e})"]) from None


def plain_prompt(agent: str, message: Any) -> str:
    if not isinstance(message, str):
        raise InvalidInputError(agent, [f"$: a text message, not {type(message).__name__}"])
    if not message.strip():
        raise InvalidInputError(agent, ["$: empty message"])
    return message


def json_schema_validator(schema: dict[str, Any], field: str) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise AgentConfigError(field, f"not a valid JSON Schema: {e.message}") from None
    return cls(schema)


def output_type(schema: type[BaseModel] | Mapping[str, Any] | None) -> tuple[Any, Any]:
    """``(output_type, validator)`` for pydantic-ai; the validator is ``None`` or a function
    raising ``ModelRetry`` for values that fail a JSON Schema."""
    if schema is None:
        return str, None
    if not isinstance(schema, Mapping):
        return schema, None
    raw = dict(schema)
    if raw.get("type", "object") != "object":
        raise AgentConfigError("output_schema", "a JSON Schema of type object")
    validator = json_schema_validator(raw, "output_schema")
    out = StructuredDict(raw, name=str(raw.get("title") or "output"))

    def check(value: Any) -> Any:
        errors = [
            f"{'.'.join(map(str, err.absolute_path)) or '$'}: {err.message}"
            for err in validator.iter_errors(value)
        ]
        if errors:
            raise ModelRetry("output does not fit the schema: " + "; ".join(sorted(errors)))
        return value

    return out, check
