"""Model endpoints of stored agents: the node's guard, and the check of a definition's model
before it is stored (and by ``GET /agents/{id}/check``).

* ``endpoint_guard(settings)``: the ``EndpointGuard`` of this node: the webhook guard's
  address predicate (``_ssrf.is_forbidden_address``: loopback, private, link-local,
  reserved...) with the operator's ``model_allow_hosts`` as exceptions. ``open_node`` gives it
  to the agent system, which applies it to every request a stored agent makes to its
  ``config.base_url`` (connect time: the address checked is the one connected to).
* ``model_problems(ctx, draft)``: what keeps a definition's model from working here, as
  ``{"field", "reason"}``: a refused ``config.base_url`` (definition time: the host is
  resolved now), an unknown provider, a missing client library, key or base URL. Creating,
  replacing or rolling back to such a definition is refused with 422 (``check_definition``).
  The check is for this node: a key set only on another node is reported missing here.
"""

from __future__ import annotations

from typing import Any

from netsuke.agents import EndpointGuard, EndpointRefusedError, model_problem, parse_allow_hosts
from netsuke.store import AgentDraft, validate_agent

from ._context import ApiContext
from ._problems import ProblemError
from ._settings import Settings
from ._ssrf import is_forbidden_address

__all__ = ["check_definition", "definition_problems", "endpoint_guard", "model_problems"]


def endpoint_guard(settings: Settings) -> EndpointGuard:
    """The node's guard for model URLs (see the module documentation)."""
    return EndpointGuard(is_forbidden_address, parse_allow_hosts(settings.model_allow_hosts))


async def model_problems(ctx: ApiContext, draft: AgentDraft) -> list[dict[str, str]]:
    """What keeps ``draft``'s model from working on this node (empty: nothing known)."""
    return await definition_problems(ctx.settings, draft)


async def definition_problems(settings: Settings, draft: AgentDraft) -> list[dict[str, str]]:
    """``model_problems`` for a node's ``settings`` (no request context needed)."""
    config: dict[str, Any] = draft.config
    base_url = config.get("base_url")
    key_env = config.get("api_key_env")
    problems: list[dict[str, str]] = []
    if isinstance(base_url, str) and base_url:
        try:
            await endpoint_guard(settings).check_url(base_url)
        except EndpointRefusedError as e:
            problems.append({"field": "config.base_url", "reason": e.reason})
    found = model_problem(
        draft.model,
        base_url=base_url if isinstance(base_url, str) else None,
        api_key_env=key_env if isinstance(key_env, str) else None,
    )
    if found is not None:
        problems.append({"field": found[0], "reason": found[1]})
    return problems


async def check_definition(ctx: ApiContext, draft: AgentDraft) -> None:
    """422 (problem+json naming each field) when ``draft`` is invalid (the store's checks,
    first: a secret in ``config`` is named before anything else) or its model cannot work."""
    validate_agent(draft)
    problems = await model_problems(ctx, draft)
    if problems:
        raise ProblemError(
            422,
            "Validation failed",
            "; ".join(f"{p['field']}: {p['reason']}" for p in problems),
            type="validation",
            errors=problems,
        )
