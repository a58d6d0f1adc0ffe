"""``/healthz`` (the process answers), ``/readyz`` (store and node usable), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import Gauge
from pydantic import BaseModel

from netsuke.observability import REGISTRY, render_metrics
from netsuke.store import probe_writable

from .._problems import ProblemError
from ..deps import COOKIE, Ctx, authenticate, client_of

__all__ = ["Health", "router"]

router = APIRouter(tags=["health"])

QUEUE_DEPTH = Gauge(
    "netsuke_queue_tasks",
    "Tasks in the durable queue by status, read from the store at scrape time",
    ["status"],
    registry=REGISTRY,
)
_DEPTH_STATUSES = ("queued", "leased", "dead")


class Health(BaseModel):
    status: str
    node: str
    checks: dict[str, str] = {}


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz(ctx: Ctx) -> Health:
    return Health(status="ok", node=ctx.runtime.node)


@router.get("/readyz", response_model=Health, summary="Readiness")
async def readyz(ctx: Ctx) -> Health:
    """503 (problem+json) while the node is closed, the store does not answer reads, or it
    cannot take writes (``store_write``: ``locked`` past a second, ``read-only``, ``full``
    (under ``readyz_min_free_mb`` free), ``io``; see ``store.probe_writable``)."""
    checks: dict[str, str] = {}
    try:
        await ctx.store.agents.count()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = type(exc).__name__
    try:
        reason = await probe_writable(
            ctx.store.database, min_free_bytes=ctx.settings.readyz_min_free_mb * 1024 * 1024
        )
    except Exception as exc:  # the probe itself failed: not ready either
        reason = type(exc).__name__
    checks["store_write"] = reason or "ok"
    checks["node"] = "closed" if ctx.runtime.closed else "ok"
    if any(v != "ok" for v in checks.values()):
        raise ProblemError(503, "Not ready", "a dependency is not ready", checks=checks)
    return Health(status="ok", node=ctx.runtime.node, checks=checks)


@router.get("/metrics", include_in_schema=False)
async def metrics(ctx: Ctx, request: Request) -> Response:
    """Prometheus text exposition of ``netsuke.observability.REGISTRY``."""
    if not ctx.settings.metrics_public:
        auth = request.headers.get("authorization", "")
        secret = auth[7:] if auth.lower().startswith("bearer ") else None
        await authenticate(
            ctx, secret, cookie=request.cookies.get(COOKIE), client=client_of(request)
        )
    tasks = ctx.extras.get("tasks")
    if tasks is not None:  # queue depth and dead letters: one count per status per scrape
        for status in _DEPTH_STATUSES:
            try:
                QUEUE_DEPTH.labels(status).set(await tasks.count(status))
            except Exception:  # the scrape still answers with everything else
                QUEUE_DEPTH.labels(status).set(float("nan"))
    return Response(render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")
