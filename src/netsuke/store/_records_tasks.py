"""Task records: what the queue stores and hands out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

__all__ = ["TaskDraft", "TaskRecord", "TaskStatus", "trusted_task"]

TaskStatus = Literal["queued", "leased", "succeeded", "dead"]


class TaskDraft(BaseModel):
    """A task to insert. ``capabilities`` are what a worker must offer (all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    priority: int = 0
    max_attempts: int = Field(default=5, ge=1, le=1000)
    backoff_base: float = Field(default=1.0, gt=0)
    backoff_cap: float = Field(default=60.0, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    run_at: datetime
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    _payload_json: str | None = PrivateAttr(default=None)

    def with_payload_json(self, text: str) -> TaskDraft:
        """Attach ``json.dumps(self.payload)``, which the caller computed already (to check
        the payload is JSON): the store writes it as is instead of encoding it again."""
        self._payload_json = text
        return self

    @property
    def payload_json(self) -> str | None:
        return self._payload_json

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cap in value:
            if not cap or " " in cap or len(cap) > 64:
                raise ValueError(f"bad capability {cap!r}: 1..64 characters, no spaces")
        return tuple(sorted(set(value)))

    @property
    def route(self) -> str:
        return " ".join(self.capabilities)


class TaskRecord(BaseModel):
    """A task as stored. ``attempts`` counts deliveries so far (the current one included)."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: str
    payload: dict[str, Any]
    capabilities: list[str]
    priority: int
    status: TaskStatus
    attempts: int
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    timeout: float | None
    run_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    idempotency_key: str | None
    result: Any = None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


_FIELDS = frozenset(TaskRecord.model_fields)
_new = object.__new__
_set = object.__setattr__


def trusted_task(data: dict[str, Any]) -> TaskRecord:
    """A ``TaskRecord`` from values the store built or read itself (every field present and
    well typed), without validation: the queue's hot path builds two per task, and
    ``model_construct`` costs ~10 us each. The result is a normal, frozen ``TaskRecord``."""
    record = _new(TaskRecord)
    _set(record, "__dict__", data)
    _set(record, "__pydantic_fields_set__", set(_FIELDS))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record
