"""``/api/v1/audit``: the audit log, newest first (admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from netsuke.store import AuditEntry

from ..deps import Admin, Ctx, Paging

__all__ = ["AuditPage", "router"]

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None


@router.get("", response_model=AuditPage, summary="Read the audit log")
async def list_audit(
    ctx: Ctx,
    caller: Admin,
    page: Paging,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    target: Annotated[str | None, Query(max_length=300)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive.")] = None,
) -> AuditPage:
    """Who did what to which target, when, and the outcome; filters are exact matches."""
    result = await ctx.store.audit.list(
        actor=actor, action=action, target=target, since=since, limit=page.limit, cursor=page.cursor
    )
    return AuditPage(items=result.items, next_cursor=result.next_cursor)
