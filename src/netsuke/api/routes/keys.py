"""``/api/v1/keys``: issue, list and revoke API keys (admins only).

A new key's secret is in the ``201`` answer only; the store keeps its sha256.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from netsuke.store import ApiKey, IssuedApiKey, Role

from ..deps import Admin, Ctx, Paging

__all__ = ["KeyPage", "KeyRequest", "router"]

router = APIRouter(prefix="/keys", tags=["keys"])


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=200,
        description="Who holds the key; for a user key, the user it acts as.",
    )
    role: Role = "user"


class KeyPage(BaseModel):
    items: list[ApiKey]
    next_cursor: str | None = None


@router.post("", status_code=201, response_model=IssuedApiKey, summary="Issue an API key")
async def create_key(ctx: Ctx, caller: Admin, body: KeyRequest) -> IssuedApiKey:
    """The secret is returned this once."""
    return await ctx.store.api_keys.create(body.name, body.role, actor=caller.actor)


@router.get("", response_model=KeyPage, summary="List API keys")
async def list_keys(ctx: Ctx, caller: Admin, page: Paging) -> KeyPage:
    """Active keys by age (prefixes only, never secrets); the cursor is a key prefix."""
    keys = await ctx.store.api_keys.list()
    if page.cursor is not None:
        prefixes = [k.prefix for k in keys]
        keys = keys[prefixes.index(page.cursor) + 1 :] if page.cursor in prefixes else []
    items = keys[: page.limit]
    more = len(keys) > page.limit
    return KeyPage(items=items, next_cursor=items[-1].prefix if more else None)


@router.delete("/{prefix}", response_model=ApiKey, summary="Revoke an API key")
async def revoke_key(
    ctx: Ctx,
    caller: Admin,
    prefix: Annotated[str, Path(pattern=r"^[0-9a-f]{8}$")],
) -> ApiKey:
    revoked = await ctx.store.api_keys.revoke(prefix, actor=caller.actor)
    ctx.keys.forget(prefix)
    return revoked
