"""Task records: what the queue stores and hands out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from ._turn_writers import AuditValues

__all__ = ["TaskDraft", "TaskRecord", "TaskStatus", "trusted_task"]

TaskStatus = Literal["queued", "leased", "succeeded", "dead"]

_new = object.__new__
_set = object.__setattr__
_NUMBER = (int, float)


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
    _audit: Any = PrivateAttr(default=None)  # with_audit

    def with_payload_json(self, text: str) -> TaskDraft:
        """Attach ``json.dumps(self.payload)``, which the caller computed already (to check
        the payload is JSON): the store writes it as is instead of encoding it again."""
        self._payload_json = text
        return self

    @classmethod
    def plain(
        cls,
        *,
        kind: Any,
        payload: dict[str, Any],
        payload_json: str,
        capabilities: tuple[Any, ...],
        priority: Any,
        max_attempts: Any,
        backoff_base: Any,
        backoff_cap: Any,
        timeout: Any,
        run_at: datetime,
        idempotency_key: Any,
    ) -> TaskDraft | None:
        """The draft these values make when they are plainly valid, built without pydantic's
        validation (the queue's submit path: a few microseconds instead of ~15); ``None`` when
        any value is not plainly valid: construct ``TaskDraft(...)`` for the precise error.
        ``payload_json`` is ``json.dumps(payload)``."""
        if not (
            type(kind) is str
            and 0 < len(kind) <= 64
            and type(priority) is int
            and type(max_attempts) is int
            and 1 <= max_attempts <= 1000
            and type(backoff_base) in _NUMBER
            and backoff_base > 0
            and type(backoff_cap) in _NUMBER
            and backoff_cap > 0
            and (timeout is None or (type(timeout) in _NUMBER and timeout > 0))
            and (
                idempotency_key is None
                or (type(idempotency_key) is str and 0 < len(idempotency_key) <= 200)
            )
        ):
            return None
        for key in payload:
            if type(key) is not str:
                return None
        for cap in capabilities:
            if type(cap) is not str or not cap or " " in cap or len(cap) > 64:
                return None
        draft = _new(cls)
        _set(draft, "__dict__", {
            "kind": kind,
            "payload": payload,
            "capabilities": tuple(sorted(set(capabilities))),
            "priority": priority,
            "max_attempts": max_attempts,
            "backoff_base": float(backoff_base),
            "backoff_cap": float(backoff_cap),
            "timeout": None if timeout is None else float(timeout),
            "run_at": run_at,
            "idempotency_key": idempotency_key,
        })  # fmt: skip
        _set(draft, "__pydantic_fields_set__", set(_DRAFT_FIELDS))
        _set(draft, "__pydantic_extra__", None)
        _set(draft, "__pydantic_private__", {"_payload_json": payload_json})
        return draft

    @property
    def payload_json(self) -> str | None:
        private = self.__pydantic_private__
        return None if private is None else private.get("_payload_json")

    def with_audit(self, rows_for: Callable[[str], Sequence[AuditValues]]) -> TaskDraft:
        """Commit audit rows with the task, in its transaction, if it is created (a draft
        whose idempotency key is taken writes none): ``rows_for(task_id)`` makes them."""
        private = self.__pydantic_private__
        if private is None:
            private = {}
            object.__setattr__(self, "__pydantic_private__", private)
        private["_audit"] = rows_for
        return self

    @property
    def audit(self) -> Callable[[str], Sequence[AuditValues]] | None:
        """What ``with_audit`` attached, or ``None``."""
        private = self.__pydantic_private__
        return None if private is None else private.get("_audit")

    def new_record(self, task_id: str, now: datetime) -> dict[str, Any]:
        """The stored fields of this draft as a new task ``task_id`` submitted at ``now``
        (``queued``, no attempt yet): what a backend writes, and answers the submitter."""
        return {
            "id": task_id,
            "kind": self.kind,
            "payload": self.payload,
            "capabilities": list(self.capabilities),
            "priority": self.priority,
            "status": "queued",
            "attempts": 0,
            "max_attempts": self.max_attempts,
            "backoff_base": self.backoff_base,
            "backoff_cap": self.backoff_cap,
            "timeout": self.timeout,
            "run_at": self.run_at,
            "lease_owner": None,
            "lease_expires_at": None,
            "idempotency_key": self.idempotency_key,
            "result": None,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
        }

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


_FIELDS = frozenset(TaskRecord.model_fields)
_DRAFT_FIELDS = frozenset(TaskDraft.model_fields)
