"""Health, readiness, Prometheus metrics, request ids in logs, and a span per request that
continues the caller's trace and parents the store's spans."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import structlog

from netsuke.observability.testing import capture_spans

from .conftest import Live


async def test_health_and_readiness(live: Live) -> None:
    client = live.client()
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = (await client.get("/readyz")).json()
    assert ready["checks"] == {"store": "ok", "store_write": "ok", "node": "ok"}


async def test_metrics_count_requests_by_route_template(live: Live) -> None:
    line = 'netsuke_api_requests_total{method="GET",route="/api/v1/agents/{agent_id}",status="404"}'

    async def count() -> float:
        text = (await live.client().get("/metrics")).text
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = await count()
    await live.admin.get("/api/v1/agents/nobody")
    await live.admin.get("/api/v1/agents/nobody2")
    assert await count() == before + 2
    text = (await live.client().get("/metrics")).text
    assert "netsuke_api_request_duration_seconds_bucket" in text
    assert "netsuke_store_operations_total" in text


async def test_request_id_is_echoed_and_logged(live: Live) -> None:
    with structlog.testing.capture_logs() as logs:
        r = await live.admin.get("/api/v1/agents", headers={"X-Request-ID": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    access = [e for e in logs if e["event"] == "api.request"]
    assert access and access[-1]["route"] == "/api/v1/agents" and access[-1]["status"] == 200
    generated = await live.admin.get("/api/v1/agents", headers={"X-Request-ID": "bad id!"})
    assert generated.headers["x-request-id"] != "bad id!"


async def test_a_span_per_request_continues_the_callers_trace(live: Live) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    with capture_spans() as spans:
        r = await live.admin.post(
            "/api/v1/agents", json={"name": "traced"}, headers={"traceparent": parent}
        )
        assert r.status_code == 201
    (server,) = spans.named("POST /api/v1/agents")
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.attributes["http.response.status_code"] == 201
    store_spans = [s for s in spans if s.name.startswith("store.agents.create")]
    assert store_spans and all(s.context.trace_id == server.context.trace_id for s in store_spans)


async def test_metrics_show_queue_depth_and_dead_letters(live: Live) -> None:
    def gauge(text: str, status: str) -> float:
        line = f'netsuke_queue_tasks{{status="{status}"}}'
        found = [ln for ln in text.splitlines() if ln.startswith(line)]
        return float(found[0].split()[-1]) if found else -1.0

    before = (await live.client().get("/metrics")).text
    queued = gauge(before, "queued")
    assert queued >= 0 and gauge(before, "dead") >= 0
    for _ in range(3):
        r = await live.admin.post(
            "/api/v1/tasks", json={"kind": "never", "capabilities": ["nobody-offers-this"]}
        )
        assert r.status_code == 201
    after = (await live.client().get("/metrics")).text
    assert gauge(after, "queued") == queued + 3


async def test_access_log_keeps_failures_and_samples_successes(
    live_factory: Callable[..., AbstractAsyncContextManager[Live]],
) -> None:
    async with live_factory(access_log_sample=0.0) as live:
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                assert (await live.admin.get("/api/v1/agents")).status_code == 200
            assert (await live.admin.get("/api/v1/agents/nobody")).status_code == 404
        lines = [e for e in logs if e["event"] == "api.request"]
        assert [(e["route"], e["status"]) for e in lines] == [("/api/v1/agents/{agent_id}", 404)]
    async with live_factory(access_log_sample=1.0) as live:
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                assert (await live.admin.get("/api/v1/agents")).status_code == 200
        assert len([e for e in logs if e["event"] == "api.request"]) == 5
