"""Validation at the door: every check that needs no database, each failure a
``ValidationError(field, reason)`` raised before anything is written.

Rules:

* agent names ``^[A-Za-z][A-Za-z0-9_.-]{0,63}$``; function names are Python identifiers
  (at most 64 characters); capability and tool names ``^[a-z][a-z0-9_.-]{0,63}$``;
* a model is ``provider:model`` with a known provider (``KNOWN_PROVIDERS``), or bare ``test``
  or ``offline``; ``config.base_url`` (an http(s) URL without credentials) only for the
  providers in ``BASE_URL_PROVIDERS``;
* no secret in ``config``: ``api_key`` (and ``token``, ``secret``, ``password``, ...) is
  refused with a hint to name an environment variable in ``config.api_key_env`` instead,
  which must be a key variable (``*_API_KEY`` or ``HF_TOKEN``, not ``NETSUKE_*``);
* JSON Schemas must be objects that pass their metaschema (``check_schema``);
* no string, key or nested value may hold a lone surrogate or nest deeper than
  ``MAX_JSON_DEPTH`` (``check_json``, the same check as every API body);
* model settings within their ranges; ``max_chain_depth`` 0..32; a known ``chain_strategy``.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jsonschema
import pydantic
from jsonschema.validators import validator_for

from ._definitions import AgentDraft, FunctionDraft
from ._errors import ValidationError
from ._json_values import check_json

__all__ = [
    "CHAIN_STRATEGIES",
    "KNOWN_PROVIDERS",
    "check_limit",
    "is_secret_config_key",
    "key_env_problem",
    "parse_model",
    "validate_agent",
    "validate_function",
    "validate_json_schema",
    "validate_model_string",
]

KNOWN_PROVIDERS = frozenset(
    {
        "anthropic",
        "bedrock",
        "cohere",
        "deepseek",
        "google-gla",
        "google-vertex",
        "grok",
        "groq",
        "huggingface",
        "mistral",
        "offline",
        "ollama",
        "openai",
        "openai-chat",
        "openai-compatible",
        "openai-responses",
        "openrouter",
        "test",
    }
)
BARE_MODELS = frozenset({"test", "offline"})
BASE_URL_PROVIDERS = frozenset(
    {"openai", "openai-chat", "openai-responses", "openai-compatible", "ollama", "anthropic"}
)
SECRET_CONFIG_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "secret",
        "password",
        "token",
        "access_token",
        "auth_token",
        "bearer_token",
        "authorization",
        "client_secret",
    }
)
KEY_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
CHAIN_STRATEGIES = ("sequential", "parallel", "router")
MAX_CHAIN_DEPTH = 32

AGENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ITEM_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_SETTING_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "max_tokens": (1, 1_000_000),
}

M = TypeVar("M", bound=pydantic.BaseModel)


def parse_model(cls: type[M], data: Mapping[str, Any] | M) -> M:
    """``cls.model_validate(data)`` with pydantic's errors turned into ``ValidationError``."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationError(_loc(first["loc"]) or "(root)", first["msg"]) from None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_model_string(model: str, config: Mapping[str, Any] | None = None) -> str:
    """Check ``provider:model`` (or bare ``test``/``offline``); returns the provider."""
    if model in BARE_MODELS:
        return model
    provider, sep, name = model.partition(":")
    if not sep or not name:
        raise ValidationError("model", f"{model!r} is not of the form 'provider:model'")
    if provider not in KNOWN_PROVIDERS:
        raise ValidationError(
            "model", f"unknown provider {provider!r}; known: {', '.join(sorted(KNOWN_PROVIDERS))}"
        )
    if not MODEL_NAME.match(name):
        raise ValidationError("model", f"model name {name!r} has characters that are not allowed")
    if config is not None and config.get("base_url") is not None:
        _base_url(provider, config["base_url"])
    return provider


def _base_url(provider: str, base_url: Any) -> None:
    if provider not in BASE_URL_PROVIDERS:
        raise ValidationError(
            "config.base_url",
            f"provider {provider!r} takes no base_url "
            f"(only {', '.join(sorted(BASE_URL_PROVIDERS))})",
        )
    if not isinstance(base_url, str) or not re.match(r"^https?://[^\s/]+\S*$", base_url):
        raise ValidationError("config.base_url", "must be an http:// or https:// URL")
    try:
        parts = urlsplit(base_url)
        _ = parts.port
    except ValueError:
        raise ValidationError("config.base_url", "not a valid URL") from None
    if not parts.hostname:
        raise ValidationError("config.base_url", "the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "config.base_url",
            "credentials in the URL are not accepted: name the key's environment variable "
            "with config.api_key_env",
        )


def is_secret_config_key(key: str) -> bool:
    """Whether a ``config`` key would hold a secret (``api_key``, ``token``, ``*_secret``...)."""
    k = key.lower().replace("-", "_")
    if k == "api_key_env":
        return False
    return k in SECRET_CONFIG_KEYS or k.endswith(("_api_key", "_secret", "_password"))


def key_env_problem(name: Any) -> str | None:
    """Why ``name`` may not name a model key's environment variable, or None. Allowed: an
    upper-case name ending in ``_API_KEY`` (or ``HF_TOKEN``) outside ``NETSUKE_*``, so a
    definition cannot make the node send, say, ``AWS_SECRET_ACCESS_KEY`` to a model server."""
    if not isinstance(name, str) or not KEY_ENV_NAME.match(name):
        return "must be an environment variable name (A-Z, 0-9, _)"
    if name.startswith("NETSUKE_"):
        return "the node's own NETSUKE_* variables cannot be used as model keys"
    if not name.endswith("_API_KEY") and name != "HF_TOKEN":
        return "must end in _API_KEY (or be HF_TOKEN), e.g. OPENAI_API_KEY or VLLM_API_KEY"
    return None


def _label_part(s: Any) -> bool:
    return (
        isinstance(s, str)
        and 0 < len(s) <= 64
        and s.isascii()
        and all(c.isalnum() or c in "_.-" for c in s)
    )


def _node_labels(labels: Any) -> None:
    """``config.node_labels``: the node labels a session of the agent requires (placement);
    a mapping of up to 16 ``key: value`` strings (letters, digits, ``_.-``, 1-64 each)."""
    if labels is None:
        return
    if not isinstance(labels, Mapping) or len(labels) > 16:
        raise ValidationError("config.node_labels", "a mapping of up to 16 key: value labels")
    for k, v in labels.items():
        if not _label_part(k) or not _label_part(v):
            raise ValidationError(
                "config.node_labels", f"label {k!s}={v!s}: letters, digits, _ . - (1-64 each)"
            )


def _config_secrets(config: Mapping[str, Any]) -> None:
    for key in config:
        if is_secret_config_key(str(key)):
            raise ValidationError(
                f"config.{key}",
                "secrets are never stored in a definition: put the key in the node's "
                "environment and name the variable with config.api_key_env "
                "(e.g. api_key_env: OPENAI_API_KEY)",
            )
    if "api_key_env" in config:
        problem = key_env_problem(config["api_key_env"])
        if problem is not None:
            raise ValidationError("config.api_key_env", problem)


def validate_json_schema(field: str, schema: Any) -> None:
    """Refuse a schema that is not a JSON object or fails its metaschema."""
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise ValidationError(field, "a JSON Schema must be an object")
    try:
        validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValidationError(
            field, f"invalid JSON Schema{' at ' + where if where else ''}: {exc.message}"
        ) from None


def _names(field: str, values: list[str], pattern: re.Pattern[str], what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if not pattern.match(value):
            raise ValidationError(
                f"{field}[{i}]", f"{value!r} is not a valid {what} (pattern {pattern.pattern})"
            )
        if value in seen:
            raise ValidationError(f"{field}[{i}]", f"{value!r} is listed twice")
        seen.add(value)


def _json(field: str, value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"must be plain JSON data: {exc}") from None


def validate_agent(draft: AgentDraft) -> AgentDraft:
    """Every check on an agent draft that needs no database (delegates are checked by the
    repository, in the writing transaction)."""
    check_json(draft.model_dump(), "")
    if not AGENT_NAME.match(draft.name):
        raise ValidationError("name", f"{draft.name!r} does not match {AGENT_NAME.pattern}")
    if len(draft.description) > 4000:
        raise ValidationError("description", "longer than 4000 characters")
    if len(draft.system_prompt) > 200_000:
        raise ValidationError("system_prompt", "longer than 200000 characters")
    _config_secrets(draft.config)
    _node_labels(draft.config.get("node_labels"))
    validate_model_string(draft.model, draft.config)
    for key, value in draft.model_settings.as_dict().items():
        low, high = _SETTING_RANGES[key]
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"model_settings.{key}", "must be a finite number")
        if not low <= value <= high:
            raise ValidationError(f"model_settings.{key}", f"{value} is outside {low}..{high}")
    validate_json_schema("input_schema", draft.input_schema)
    validate_json_schema("output_schema", draft.output_schema)
    _names("capabilities", draft.capabilities, ITEM_NAME, "capability name")
    _names("tools", draft.tools, ITEM_NAME, "tool name")
    _names("delegates", draft.delegates, AGENT_NAME, "agent name")
    if not 0 <= draft.max_chain_depth <= MAX_CHAIN_DEPTH:
        raise ValidationError("max_chain_depth", f"must be within 0..{MAX_CHAIN_DEPTH}")
    if draft.chain_strategy not in CHAIN_STRATEGIES:
        raise ValidationError(
            "chain_strategy",
            f"{draft.chain_strategy!r} is not one of {', '.join(CHAIN_STRATEGIES)}",
        )
    _json("config", draft.config)
    return draft


def validate_function(draft: FunctionDraft) -> FunctionDraft:
    """Check a function draft; returns it with ``is_async`` filled in from the code."""
    check_json(draft.model_dump(), "")
    if not FUNCTION_NAME.match(draft.name):
        raise ValidationError("name", f"{draft.name!r} is not a Python identifier of <= 64 chars")
    try:
        tree = ast.parse(draft.code)
    except SyntaxError as exc:
        raise ValidationError("code", f"syntax error at line {exc.lineno}: {exc.msg}") from None
    found: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == draft.name:
            found = node
    if found is None:
        raise ValidationError("code", f"defines no top-level function named {draft.name!r}")
    is_async = isinstance(found, ast.AsyncFunctionDef)
    if draft.is_async is not None and draft.is_async != is_async:
        raise ValidationError(
            "is_async", f"the code defines {'an async' if is_async else 'a'} function"
        )
    for i, module in enumerate(draft.allowed_imports):
        if not MODULE_NAME.match(module):
            raise ValidationError(f"allowed_imports[{i}]", f"{module!r} is not a module name")
    allowed = set(draft.allowed_imports)
    for item in ast.walk(tree):
        if isinstance(item, ast.Import):
            modules = [alias.name for alias in item.names]
        elif isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
            modules = [item.module]
        else:
            continue
        for module in modules:
            if module not in allowed and module.split(".")[0] not in allowed:
                raise ValidationError(
                    "code", f"line {item.lineno}: imports {module!r}, not in allowed_imports"
                )
    if not 0 < draft.limits.timeout_s <= 3600:
        raise ValidationError("limits.timeout_s", "must be within (0, 3600]")
    if not 16 <= draft.limits.memory_mb <= 65536:
        raise ValidationError("limits.memory_mb", "must be within 16..65536")
    validate_json_schema("input_schema", draft.input_schema)
    validate_json_schema("output_schema", draft.output_schema)
    return draft.model_copy(update={"is_async": is_async})


def check_limit(limit: int) -> int:
    """A page size within 1..1000."""
    if not 1 <= limit <= 1000:
        raise ValidationError("limit", "must be within 1..1000")
    return limit
