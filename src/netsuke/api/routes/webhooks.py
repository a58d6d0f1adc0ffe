"""``/api/v1/webhooks``: register, list, get, delete webhooks and read their deliveries log.

Admins only (a webhook sends the node's events out). A target on a loopback, private,
link-local or reserved address is refused (422, field ``url``) unless the operator set
``allow_private_webhooks``; see ``_ssrf``. The signing secret (given, or generated as
``whsec_...``) is in the ``201`` answer only.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from netsuke.store import DeliveryStatus, IssuedWebhook, Webhook, WebhookDelivery

from .._problems import ProblemError
from .._ssrf import TargetRefusedError, check_target
from ..deps import Admin, Ctx, Paging

__all__ = ["DeliveryPage", "WebhookPage", "WebhookRequest", "router"]

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WebhookId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL to POST to.")
    topics: list[str] = Field(
        min_length=1, max_length=20, description="Topic patterns, e.g. agent.* or task.failed."
    )
    description: str = Field(default="", max_length=1000)
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=128,
        description="Signing secret; generated when omitted.",
    )


class WebhookPage(BaseModel):
    items: list[Webhook]
    next_cursor: str | None = None


class DeliveryPage(BaseModel):
    items: list[WebhookDelivery]
    next_cursor: str | None = None


@router.post("", status_code=201, response_model=IssuedWebhook, summary="Register a webhook")
async def create_webhook(ctx: Ctx, caller: Admin, body: WebhookRequest) -> IssuedWebhook:
    try:
        await check_target(body.url, allow_private=ctx.settings.allow_private_webhooks)
    except TargetRefusedError as exc:
        raise ProblemError(
            422,
            "Validation failed",
            f"url: {exc.reason}",
            type="validation",
            errors=[{"field": "url", "reason": exc.reason}],
        ) from None
    issued = await ctx.store.webhooks.create(
        body.url,
        body.topics,
        secret=body.secret or f"whsec_{secrets.token_urlsafe(32)}",
        description=body.description,
        actor=caller.actor,
    )
    await ctx.webhooks.refresh()
    return issued


@router.get("", response_model=WebhookPage, summary="List webhooks")
async def list_webhooks(ctx: Ctx, caller: Admin, page: Paging) -> WebhookPage:
    result = await ctx.store.webhooks.list(limit=page.limit, cursor=page.cursor)
    return WebhookPage(items=result.items, next_cursor=result.next_cursor)


@router.get("/{webhook_id}", response_model=Webhook, summary="Get a webhook")
async def get_webhook(ctx: Ctx, caller: Admin, webhook_id: WebhookId) -> Webhook:
    return await ctx.store.webhooks.get(webhook_id)


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook and its log")
async def delete_webhook(ctx: Ctx, caller: Admin, webhook_id: WebhookId) -> Response:
    await ctx.store.webhooks.delete(webhook_id, actor=caller.actor)
    await ctx.webhooks.refresh()
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries", response_model=DeliveryPage, summary="A webhook's deliveries"
)
async def list_deliveries(
    ctx: Ctx,
    caller: Admin,
    webhook_id: WebhookId,
    page: Paging,
    status: Annotated[DeliveryStatus | None, Query()] = None,
) -> DeliveryPage:
    """Newest first: status, attempts, last response status and error of each."""
    result = await ctx.store.webhooks.deliveries(
        webhook_id, status=status, limit=page.limit, cursor=page.cursor
    )
    return DeliveryPage(items=result.items, next_cursor=result.next_cursor)
