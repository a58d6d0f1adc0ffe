"""``/api/v1/agents``: agent definitions, their versions and rollback, with ETag/If-Match.

* Reading needs any key; writing needs ``operator``.
* ``ETag`` is the quoted current version (``"3"``). ``PUT`` and ``DELETE`` require
  ``If-Match`` naming the version read (428 without it, 412 with a stale one, the current
  ``ETag`` in the answer); ``If-Match: *`` means "whatever is current". Rollback and
  ``PATCH`` take it optionally.
* ``PUT`` replaces the whole content (a field left out gets its default). ``PATCH`` is a JSON
  merge patch (RFC 7396, ``application/merge-patch+json`` or ``application/json``): the
  fields sent change, ``null`` resets one to its default, the rest is kept; the result is
  checked like a PUT body and stored as the next version (none when nothing changed).
* Creating, replacing, patching or rolling back to a definition whose model cannot work on this
  node is 422 naming the field (``config.base_url`` refused by the address guard, ``model`` with
  a missing key or client library, ``config.api_key_env`` not set); a secret in ``config``
  (``api_key``...) is 422 too and is never stored. ``GET /agents/{id}/check`` (operator)
  reports the same problems for a stored definition.
* Every change publishes ``definition.changed`` on the node's bus (kind, name, version,
  action, actor).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from netsuke.events import topics
from netsuke.store import AgentDefinition, AgentDraft, ModelSettings

from .._merge_patch import merge_patch, openapi_body, read_merge_patch, validated
from .._model_guard import check_definition, model_problems
from .._problems import ProblemError
from ..deps import Caller, Ctx, Operator, Paging

__all__ = [
    "AgentCheck",
    "AgentContent",
    "AgentPage",
    "AgentVersionPage",
    "RollbackRequest",
    "router",
]

router = APIRouter(prefix="/agents", tags=["agents"])

AgentId = Annotated[
    str,
    Path(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$", description="The agent's name."),
]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=100, description='The ETag read, e.g. "3", or *.'),
]
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')


class AgentContent(BaseModel):
    """The versioned content of a definition (every field but the name), as sent to PUT."""

    model_config = ConfigDict(extra="forbid")

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


class AgentPage(BaseModel):
    items: list[AgentDefinition]
    next_cursor: str | None = None


class AgentVersionPage(BaseModel):
    items: list[AgentDefinition]
    next_cursor: str | None = None


class ModelProblem(BaseModel):
    field: str
    reason: str


class AgentCheck(BaseModel):
    """Whether an agent's current definition can run on this node, before its first turn."""

    name: str
    version: int
    model: str
    ok: bool
    problems: list[ModelProblem]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=1_000_000_000, description="The version to restore.")


def _etag(version: int) -> str:
    return f'"{version}"'


async def _expected(ctx: Ctx, name: str, if_match: str | None, *, required: bool) -> int | None:
    if if_match is None:
        if required:
            raise ProblemError(
                428,
                "Precondition required",
                "send If-Match with the ETag of the version you read (or *)",
            )
        return None
    if if_match.strip() == "*":
        return (await ctx.store.agents.get(name)).version
    match = _ETAG.match(if_match.strip())
    if match is None:
        raise ProblemError(400, "Bad request", 'If-Match must be an ETag such as "3", or *')
    return int(match.group(1))


def _changed(ctx: Ctx, caller: Caller, name: str, version: int, action: str) -> None:
    ctx.runtime.events.publish(
        topics.DEFINITION_CHANGED,
        kind="agent",
        name=name,
        version=version,
        action=action,
        actor=caller.actor,
    )


@router.get("", response_model=AgentPage, summary="List agent definitions")
async def list_agents(
    ctx: Ctx,
    caller: Caller,
    page: Paging,
    capability: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    name_prefix: Annotated[str | None, Query(max_length=64)] = None,
) -> AgentPage:
    """Current versions ordered by name; filter by capability, model (or ``provider:``) and
    name prefix."""
    result = await ctx.store.agents.list(
        limit=page.limit,
        cursor=page.cursor,
        capability=capability,
        model=model,
        name_prefix=name_prefix,
    )
    return AgentPage(items=result.items, next_cursor=result.next_cursor)


@router.post("", status_code=201, response_model=AgentDefinition, summary="Create an agent")
async def create_agent(
    ctx: Ctx, caller: Operator, draft: AgentDraft, response: Response
) -> AgentDefinition:
    """Store a new agent as version 1 (409 if the name is taken; 422 when its model cannot
    work on this node: a refused base_url, a missing key, client library or base URL)."""
    await check_definition(ctx, draft)
    created = await ctx.store.agents.create(draft, actor=caller.actor)
    response.headers["ETag"] = _etag(created.version)
    response.headers["Location"] = f"/api/v1/agents/{created.name}"
    _changed(ctx, caller, created.name, created.version, "created")
    return created


@router.get("/{agent_id}", response_model=AgentDefinition, summary="Get an agent")
async def get_agent(
    ctx: Ctx, caller: Caller, agent_id: AgentId, response: Response
) -> AgentDefinition:
    definition = await ctx.store.agents.get(agent_id)
    response.headers["ETag"] = _etag(definition.version)
    return definition


@router.put("/{agent_id}", response_model=AgentDefinition, summary="Update an agent")
async def update_agent(
    ctx: Ctx,
    caller: Operator,
    agent_id: AgentId,
    content: AgentContent,
    response: Response,
    if_match: IfMatch = None,
) -> AgentDefinition:
    """Store ``content`` as the next version if ``If-Match`` is current (unchanged content
    makes no new version)."""
    expected = await _expected(ctx, agent_id, if_match, required=True)
    assert expected is not None
    draft = AgentDraft.model_validate({"name": agent_id, **content.model_dump()})
    await check_definition(ctx, draft)
    updated = await ctx.store.agents.update(draft, expected_version=expected, actor=caller.actor)
    response.headers["ETag"] = _etag(updated.version)
    if updated.version != expected:
        _changed(ctx, caller, agent_id, updated.version, "updated")
    return updated


@router.patch(
    "/{agent_id}",
    response_model=AgentDefinition,
    summary="Change some fields of an agent (JSON merge patch)",
    openapi_extra=openapi_body(AgentContent),
)
async def patch_agent(
    ctx: Ctx,
    caller: Operator,
    agent_id: AgentId,
    request: Request,
    response: Response,
    if_match: IfMatch = None,
) -> AgentDefinition:
    """Apply a JSON merge patch to the current content; store it as the next version if
    ``If-Match`` (optional) is current and no one changed it meanwhile (412 otherwise)."""
    patch = await read_merge_patch(request)
    if "name" in patch and patch["name"] != agent_id:
        raise ProblemError(
            422,
            "Validation failed",
            "name: an agent cannot be renamed",
            type="validation",
            errors=[{"field": "name", "reason": "an agent cannot be renamed"}],
        )
    patch.pop("name", None)
    current = await ctx.store.agents.get(agent_id)
    expected = await _expected(ctx, agent_id, if_match, required=False)
    content = validated(AgentContent, merge_patch(current.draft().content(), patch))
    draft = AgentDraft.model_validate({"name": agent_id, **content.model_dump()})
    await check_definition(ctx, draft)
    updated = await ctx.store.agents.update(
        draft, expected_version=expected or current.version, actor=caller.actor
    )
    response.headers["ETag"] = _etag(updated.version)
    if updated.version != current.version:
        _changed(ctx, caller, agent_id, updated.version, "updated")
    return updated


@router.delete("/{agent_id}", status_code=204, summary="Delete an agent and its versions")
async def delete_agent(
    ctx: Ctx, caller: Operator, agent_id: AgentId, if_match: IfMatch = None
) -> Response:
    expected = await _expected(ctx, agent_id, if_match, required=True)
    assert expected is not None
    await ctx.store.agents.delete(agent_id, expected_version=expected, actor=caller.actor)
    _changed(ctx, caller, agent_id, expected, "deleted")
    return Response(status_code=204)


@router.get(
    "/{agent_id}/versions", response_model=AgentVersionPage, summary="List an agent's versions"
)
async def list_versions(
    ctx: Ctx, caller: Caller, agent_id: AgentId, page: Paging
) -> AgentVersionPage:
    """Versions oldest first; the cursor is the last version of the previous page."""
    after = 0
    if page.cursor is not None:
        if not page.cursor.isdigit():
            raise ProblemError(422, "Validation failed", "cursor: not a cursor of this listing")
        after = int(page.cursor)
    versions = [v for v in await ctx.store.agents.versions(agent_id) if v.version > after]
    items = versions[: page.limit]
    more = len(versions) > page.limit
    return AgentVersionPage(items=items, next_cursor=str(items[-1].version) if more else None)


@router.get(
    "/{agent_id}/versions/{version}",
    response_model=AgentDefinition,
    summary="Get one version of an agent",
)
async def get_version(
    ctx: Ctx,
    caller: Caller,
    agent_id: AgentId,
    version: Annotated[int, Path(ge=1, le=1_000_000_000)],
) -> AgentDefinition:
    return await ctx.store.agents.get(agent_id, version)


@router.post(
    "/{agent_id}/rollback", response_model=AgentDefinition, summary="Roll back to a version"
)
async def rollback_agent(
    ctx: Ctx,
    caller: Operator,
    agent_id: AgentId,
    body: RollbackRequest,
    response: Response,
    if_match: IfMatch = None,
) -> AgentDefinition:
    """Write a new version whose content is ``version``'s (history is never rewritten)."""
    expected = await _expected(ctx, agent_id, if_match, required=False)
    await check_definition(ctx, (await ctx.store.agents.get(agent_id, body.version)).draft())
    restored = await ctx.store.agents.rollback(
        agent_id, body.version, expected_version=expected, actor=caller.actor
    )
    response.headers["ETag"] = _etag(restored.version)
    _changed(ctx, caller, agent_id, restored.version, "rolled_back")
    return restored


@router.get(
    "/{agent_id}/check", response_model=AgentCheck, summary="Check that an agent's model works"
)
async def check_agent(ctx: Ctx, caller: Operator, agent_id: AgentId) -> AgentCheck:
    """What keeps the current version's model from working on this node, before any turn:
    an unknown provider, a missing client library, key (``OPENAI_API_KEY is not set``) or base
    URL, a base URL the node's guard refuses. No request is sent to the model."""
    definition = await ctx.store.agents.get(agent_id)
    problems = await model_problems(ctx, definition.draft())
    return AgentCheck(
        name=definition.name,
        version=definition.version,
        model=definition.model,
        ok=not problems,
        problems=[ModelProblem(**p) for p in problems],
    )
