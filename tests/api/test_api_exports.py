"""``netsuke.api`` re-exports exactly its public names; the OpenAPI document is complete."""

from __future__ import annotations

import types

import netsuke.api
from netsuke.api.routes.agents import AgentContent
from netsuke.store._definitions import AGENT_CONTENT_FIELDS

from .conftest import Live


def test_all_equals_the_public_names() -> None:
    public = {
        n
        for n, v in vars(netsuke.api).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert set(netsuke.api.__all__) == public


def test_put_body_has_exactly_the_versioned_fields() -> None:
    assert set(AgentContent.model_fields) == set(AGENT_CONTENT_FIELDS)


async def test_openapi_lists_every_resource_and_the_bearer_scheme(live: Live) -> None:
    spec = (await live.client().get("/api/v1/openapi.json")).json()
    paths = set(spec["paths"])
    for path in [
        "/api/v1/agents",
        "/api/v1/agents/{agent_id}",
        "/api/v1/agents/{agent_id}/versions",
        "/api/v1/agents/{agent_id}/rollback",
        "/api/v1/audit",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/messages",
        "/api/v1/agents/{agent_id}/start",
        "/api/v1/agents/{agent_id}/stop",
        "/api/v1/agents/{agent_id}/restart",
        "/api/v1/agents/{agent_id}/status",
        "/api/v1/agents/{agent_id}/metrics",
        "/api/v1/agents/{agent_id}/logs",
        "/api/v1/functions",
        "/api/v1/functions/{name}",
        "/api/v1/functions/{name}/execute",
        "/api/v1/functions/{name}/versions",
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/{task_id}/requeue",
        "/api/v1/dead-letters/purge",
        "/api/v1/workflows",
        "/api/v1/workflows/{name}/runs",
        "/api/v1/workflows/runs/{run_id}",
        "/api/v1/keys",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{webhook_id}/deliveries",
        "/healthz",
        "/readyz",
    ]:
        assert path in paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
