"""Plain pydantic models for agent and function definitions: what callers write and read.

A *draft* is what a caller submits (no version); a *definition* is a stored version of it.
Drafts are checked by ``_validation`` when they reach a repository, so a draft can be built
from any data and is refused with a ``ValidationError`` naming the field.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AGENT_CONTENT_FIELDS",
    "AgentDefinition",
    "AgentDraft",
    "FunctionDefinition",
    "FunctionDraft",
    "FunctionLimits",
    "ModelSettings",
    "content_hash",
]


class ModelSettings(BaseModel):
    """Sampling settings passed to the model; ``None`` means the provider's default.

    Ranges (checked by the store): temperature 0..2, top_p 0..1, presence and frequency
    penalty -2..2, max_tokens 1..1,000,000."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    max_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Only the settings that are set (the shape of ``pydantic_ai.settings.ModelSettings``)."""
        return self.model_dump(exclude_none=True)


class AgentDraft(BaseModel):
    """An agent definition as submitted. Defaults: ``model="offline"``, ``max_chain_depth=3``,
    ``chain_strategy="sequential"``; lists and mappings empty; no schemas.

    Seed 004's shape is accepted too: ``config_data`` (a mapping) is spread over the fields
    (see ``map_config_data``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    system_prompt: str = ""
    model: str = "offline"
    model_settings: ModelSettings = Field(default_factory=ModelSettings)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    capabilities: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    delegates: list[str] = Field(default_factory=list)
    max_chain_depth: int = 3
    chain_strategy: str = "sequential"
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _seed_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "config_data" in data:
            return map_config_data(data)
        return data

    def content(self) -> dict[str, Any]:
        """The versioned content (every field but ``name``), JSON-ready."""
        data = self.model_dump(mode="json", include=set(AGENT_CONTENT_FIELDS))
        data["model_settings"] = self.model_settings.as_dict()
        return data

    def fingerprint(self) -> str:
        """sha256 of ``content()``: equal fingerprints mean no new version is needed."""
        return content_hash(self.content())


_SEED_FIELDS = frozenset(
    {
        "capabilities",
        "tools",
        "delegates",
        "max_chain_depth",
        "chain_strategy",
        "model",
        "system_prompt",
        "description",
        "input_schema",
        "output_schema",
    }
)
_SETTINGS_FIELDS = frozenset(
    {"temperature", "top_p", "presence_penalty", "frequency_penalty", "max_tokens"}
)


def map_config_data(data: dict[str, Any]) -> dict[str, Any]:
    """Seed 004's ``Agent(..., config_data={...})`` as a draft's fields: the keys naming a
    draft field (``capabilities``, ``tools``, ``delegates``, ``max_chain_depth``,
    ``chain_strategy``, ``model``, ``system_prompt``, ``description``, the schemas) become
    that field; sampling settings (``temperature``, ``top_p``, ``presence_penalty``,
    ``frequency_penalty``, ``max_tokens``) go to ``model_settings``; ``type`` must be
    ``"agent"`` and is dropped; every other key goes to ``config``. A key given both here and
    at the top level (or in ``model_settings``/``config``) with another value is refused."""
    out = dict(data)
    extra = out.pop("config_data")
    if extra is None:
        return out
    if not isinstance(extra, dict):
        raise ValueError("config_data must be an object")
    settings = out.get("model_settings")
    if isinstance(settings, ModelSettings):
        settings = settings.as_dict()
    settings = dict(settings) if isinstance(settings, dict) else ({} if settings is None else None)
    config = out.get("config")
    config = dict(config) if isinstance(config, dict) else ({} if config is None else None)
    for key, value in extra.items():
        if key == "type":
            if value != "agent":
                raise ValueError(f"config_data.type must be 'agent', not {value!r}")
            continue
        if key in _SEED_FIELDS:
            target, place = out, ""
        elif key in _SETTINGS_FIELDS and settings is not None:
            target, place = settings, "model_settings."
        elif config is not None:
            target, place = config, "config."
        else:
            raise ValueError(f"config_data.{key}: config must be an object")
        if key in target and target[key] != value:
            raise ValueError(f"config_data.{key} conflicts with {place}{key}")
        target[key] = value
    if settings:
        out["model_settings"] = settings
    if config:
        out["config"] = config
    return out


AGENT_CONTENT_FIELDS = (
    "description",
    "system_prompt",
    "model",
    "model_settings",
    "input_schema",
    "output_schema",
    "capabilities",
    "tools",
    "delegates",
    "max_chain_depth",
    "chain_strategy",
    "config",
)


class AgentDefinition(AgentDraft):
    """One stored version of an agent definition (immutable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    content_hash: str
    comment: str = ""
    created_by: str | None = None
    created_at: datetime

    def draft(self) -> AgentDraft:
        """A draft with this version's content, to edit and submit as the next version."""
        return AgentDraft.model_validate(self.model_dump(include={"name", *AGENT_CONTENT_FIELDS}))


class FunctionLimits(BaseModel):
    """Resource limits for one call: wall-clock ``timeout_s`` (default 30, max 3600) and
    ``memory_mb`` (default 512, 16..65536)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = 30.0
    memory_mb: int = 512


class FunctionDraft(BaseModel):
    """A sandbox function as submitted. ``is_async`` is read from the code when ``None``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    code: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    is_async: bool | None = None
    limits: FunctionLimits = Field(default_factory=FunctionLimits)
    allowed_imports: list[str] = Field(default_factory=list)


class FunctionDefinition(BaseModel):
    """One stored version of a function; ``sha256`` is the hash of ``code`` alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int
    code: str
    sha256: str
    description: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    is_async: bool
    limits: FunctionLimits
    allowed_imports: list[str]
    created_by: str | None
    created_at: datetime


def content_hash(content: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``content`` (sorted keys, no spaces)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
