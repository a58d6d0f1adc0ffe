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

from pydantic import BaseModel, ConfigDict, Field

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
    ``chain_strategy="sequential"``; lists and mappings empty; no schemas."""

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

    def content(self) -> dict[str, Any]:
        """The versioned content (every field but ``name``), JSON-ready."""
        data = self.model_dump(mode="json", include=set(AGENT_CONTENT_FIELDS))
        data["model_settings"] = self.model_settings.as_dict()
        return data

    def fingerprint(self) -> str:
        """sha256 of ``content()``: equal fingerprints mean no new version is needed."""
        return content_hash(self.content())


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
