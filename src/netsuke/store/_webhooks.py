"""Webhooks and the log of their deliveries.

Rules:

* A webhook is a target URL, the topic patterns it wants (shell globs such as ``agent.*``)
  and a signing secret. The secret is returned once by ``create`` (``IssuedWebhook``) and
  afterwards only to the dispatcher (``targets()``); listings never carry it.
* A delivery is written ``pending`` *before* it is attempted (``enqueue``), so an event
  accepted for a webhook survives a crash and is resumed from ``due()``. Each attempt is
  recorded with ``record_attempt``: ``succeeded``, ``pending`` with the time of the next try,
  or ``failed`` after the last one.
* Deleting a webhook deletes its deliveries. Creation and deletion are audited in the same
  transaction and are durable on return.

This repository checks form only (scheme, lengths, patterns); whether a target address may
be reached (loopback, private ranges) is the API's decision, which needs name resolution.
"""

from __future__ import annotations

import builtins
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Table, insert, select, update

from ._audit import write_audit
from ._engine import Database
from ._errors import NotFoundError, ValidationError
from ._models import Base, utcnow
from ._observe import operation
from ._records import Page
from ._validation import check_limit

__all__ = [
    "DeliveryStatus",
    "IssuedWebhook",
    "Webhook",
    "WebhookDelivery",
    "WebhookRepository",
    "WebhookTarget",
]

_hooks: Table = Base.metadata.tables["webhooks"]
_deliveries: Table = Base.metadata.tables["webhook_deliveries"]
_PATTERN = re.compile(r"^[a-z0-9_.*?\[\]!-]{1,100}$")
MAX_TOPICS = 20

DeliveryStatus = Literal["pending", "succeeded", "failed"]


class Webhook(BaseModel):
    """A registered webhook, without its secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    topics: list[str]
    description: str
    created_by: str | None
    created_at: datetime


class WebhookTarget(Webhook):
    """A webhook with its signing secret: for the dispatcher only, never for a response."""

    secret: str


class IssuedWebhook(BaseModel):
    """A new webhook and its signing secret, shown this once."""

    model_config = ConfigDict(frozen=True)

    webhook: Webhook
    secret: str


class WebhookDelivery(BaseModel):
    """One event owed to one webhook, and how its attempts went."""

    model_config = ConfigDict(frozen=True)

    id: int
    webhook_id: str
    event_id: str
    topic: str
    payload: str
    status: DeliveryStatus
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None


def _check(url: str, topics: list[str], description: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValidationError("url", "must be an http:// or https:// URL")
    if len(url) > 2000:
        raise ValidationError("url", "must be at most 2000 characters")
    if not 1 <= len(topics) <= MAX_TOPICS:
        raise ValidationError("topics", f"must name 1..{MAX_TOPICS} topic patterns")
    for i, pattern in enumerate(topics):
        if not isinstance(pattern, str) or not _PATTERN.match(pattern):
            raise ValidationError(f"topics[{i}]", "not a topic pattern such as 'agent.*'")
    if len(description) > 1000:
        raise ValidationError("description", "must be at most 1000 characters")


class WebhookRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        url: str,
        topics: builtins.list[str],
        *,
        secret: str,
        description: str = "",
        actor: str | None = None,
    ) -> IssuedWebhook:
        """Register a webhook. Durable on return."""
        _check(url, topics, description)
        if not 16 <= len(secret) <= 128:
            raise ValidationError("secret", "must be 16..128 characters")
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "url": url,
            "topics": list(topics),
            "secret": secret,
            "description": description,
            "created_by": actor,
            "created_at": utcnow(),
        }
        with operation("webhooks", "create"):
            async with self._db.write() as conn:
                await conn.execute(insert(_hooks).values(**values))
                await write_audit(
                    conn,
                    actor=actor,
                    action="webhook.create",
                    target=f"webhook:{values['id']}",
                    details={"topics": list(topics)},
                )
        return IssuedWebhook(webhook=Webhook.model_validate(values), secret=secret)

    async def get(self, webhook_id: str) -> Webhook:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(_hooks).where(_hooks.c.id == webhook_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError("webhook", webhook_id)
        return Webhook.model_validate(dict(row))

    async def list(self, *, limit: int = 50, cursor: str | None = None) -> Page[Webhook]:
        """Webhooks ordered by id."""
        limit = check_limit(limit)
        stmt = select(_hooks).order_by(_hooks.c.id).limit(limit + 1)
        if cursor is not None:
            stmt = stmt.where(_hooks.c.id > cursor)
        with operation("webhooks", "list"):
            async with self._db.read() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        items = [Webhook.model_validate(dict(r)) for r in rows[:limit]]
        return Page(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    async def targets(self) -> builtins.list[WebhookTarget]:
        """Every webhook with its secret (for the dispatcher)."""
        async with self._db.read() as conn:
            rows = (await conn.execute(select(_hooks).order_by(_hooks.c.id))).mappings().all()
        return [WebhookTarget.model_validate(dict(r)) for r in rows]

    async def delete(self, webhook_id: str, *, actor: str | None = None) -> None:
        """Delete a webhook and its deliveries log. Durable on return."""
        with operation("webhooks", "delete"):
            async with self._db.write() as conn:
                found = await conn.execute(select(_hooks.c.id).where(_hooks.c.id == webhook_id))
                if found.first() is None:
                    raise NotFoundError("webhook", webhook_id)
                await conn.execute(
                    _deliveries.delete().where(_deliveries.c.webhook_id == webhook_id)
                )
                await conn.execute(_hooks.delete().where(_hooks.c.id == webhook_id))
                await write_audit(
                    conn, actor=actor, action="webhook.delete", target=f"webhook:{webhook_id}"
                )

    # -- deliveries ---------------------------------------------------------------------------

    async def enqueue(
        self, items: builtins.list[tuple[str, str, str, str]]
    ) -> builtins.list[WebhookDelivery]:
        """Write ``(webhook_id, event_id, topic, payload)`` deliveries as ``pending``, due
        now, in one transaction; returns them. Durable on return."""
        if not items:
            return []
        now = utcnow()
        out: builtins.list[WebhookDelivery] = []
        with operation("webhooks", "enqueue", count=len(items)):
            async with self._db.write() as conn:
                for webhook_id, event_id, topic, payload in items:
                    values: dict[str, Any] = {
                        "webhook_id": webhook_id,
                        "event_id": event_id,
                        "topic": topic,
                        "payload": payload,
                        "status": "pending",
                        "attempts": 0,
                        "response_status": None,
                        "error": None,
                        "created_at": now,
                        "updated_at": now,
                        "next_attempt_at": now,
                    }
                    new_id = (
                        await conn.execute(
                            insert(_deliveries).values(**values).returning(_deliveries.c.id)
                        )
                    ).scalar_one()
                    out.append(WebhookDelivery.model_validate({"id": new_id, **values}))
        return out

    async def record_attempt(
        self,
        delivery_id: int,
        *,
        status: DeliveryStatus,
        attempts: int,
        response_status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> None:
        """Record the outcome of an attempt. Durable on return."""
        async with self._db.write() as conn:
            await conn.execute(
                update(_deliveries)
                .where(_deliveries.c.id == delivery_id)
                .values(
                    status=status,
                    attempts=attempts,
                    response_status=response_status,
                    error=error[:2000] if error else None,
                    updated_at=utcnow(),
                    next_attempt_at=next_attempt_at,
                )
            )

    async def deliveries(
        self,
        webhook_id: str,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[WebhookDelivery]:
        """A webhook's deliveries, newest first (``NotFoundError`` for an unknown webhook)."""
        limit = check_limit(limit)
        await self.get(webhook_id)
        stmt = (
            select(_deliveries)
            .where(_deliveries.c.webhook_id == webhook_id)
            .order_by(_deliveries.c.id.desc())
            .limit(limit + 1)
        )
        if status is not None:
            stmt = stmt.where(_deliveries.c.status == status)
        if cursor is not None:
            if not cursor.isdigit():
                raise ValidationError("cursor", "not a cursor returned by this listing")
            stmt = stmt.where(_deliveries.c.id < int(cursor))
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        items = [WebhookDelivery.model_validate(dict(r)) for r in rows[:limit]]
        return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)

    async def due(self, *, limit: int = 500) -> builtins.list[WebhookDelivery]:
        """Pending deliveries, oldest first (to resume after a restart)."""
        stmt = (
            select(_deliveries)
            .where(_deliveries.c.status == "pending")
            .order_by(_deliveries.c.id)
            .limit(check_limit(limit))
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [WebhookDelivery.model_validate(dict(r)) for r in rows]
