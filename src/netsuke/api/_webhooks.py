"""Webhook deliveries: events from the node's bus, signed, POSTed, retried with backoff.

Semantics
---------
* The dispatcher listens to every topic on ``rt.events`` (but ``webhook.*``, so a failing
  webhook cannot feed itself). An event matching a webhook's patterns becomes a ``pending``
  delivery row **before** any attempt, so an accepted event survives a crash: ``start()``
  resumes every pending delivery.
* A delivery is ``POST <url>`` with the JSON event (``id``, ``topic``, ``node``, ``seq``,
  ``time``, ``data``) and the headers ``Netsuke-Event`` (topic), ``Netsuke-Delivery`` (delivery
  id), ``Netsuke-Timestamp`` (unix seconds) and
  ``Netsuke-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``
  keyed with the webhook's secret (``verify_signature`` checks one, with a replay window).
* A 2xx answer is success. Anything else (another status, a timeout, a refused connection, a
  target that now resolves to a forbidden address) is retried after ``backoff_s * 2**(n-1)``
  seconds (jitter x0.8 to x1.2, capped at 600 s) up to ``max_attempts`` attempts; then the
  delivery is ``failed`` and ``webhook.failed`` is published. Redirects are not followed.
* Every attempt is recorded in the deliveries log (status, attempts, response status, error).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import random
import time
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import Counter

from netsuke.events import Event, EventBus, Subscription, topics
from netsuke.observability import REGISTRY, get_logger
from netsuke.store import Store, WebhookDelivery, WebhookTarget

from ._ssrf import TargetRefusedError, check_target

__all__ = ["WebhookDispatcher", "sign", "verify_signature"]

log = get_logger("netsuke.api.webhooks")
ATTEMPTS = Counter(
    "netsuke_webhook_attempts",
    "Webhook delivery attempts by outcome (succeeded, retried, failed)",
    ["outcome"],
    registry=REGISTRY,
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Netsuke-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class WebhookDispatcher:
    """Turns bus events into signed, retried webhook deliveries (see the module docs)."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        allow_private: bool = False,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self._bus = bus
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._targets: dict[str, WebhookTarget] = {}
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Load the webhooks, listen to the bus, and resume pending deliveries."""
        await self.refresh()
        self._sub = self._bus.listen("*", self._on_event, buffer=10_000)
        for delivery in await self._store.webhooks.due():
            target = self._targets.get(delivery.webhook_id)
            if target is not None:
                self._spawn(delivery, target)

    async def refresh(self) -> None:
        """Reload the webhooks (after one is registered or deleted)."""
        self._targets = {t.id: t for t in await self._store.webhooks.targets()}

    async def aclose(self) -> None:
        """Stop listening and cancel attempts in flight (their rows stay pending)."""
        if self._sub is not None:
            self._sub.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _on_event(self, event: Event) -> None:
        if event.topic.startswith("webhook.") or not self._targets:
            return
        wanted = [
            t
            for t in self._targets.values()
            if any(fnmatch.fnmatchcase(event.topic, p) for p in t.topics)
        ]
        if not wanted:
            return
        payload = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
        deliveries = await self._store.webhooks.enqueue(
            [(t.id, event.id, event.topic, payload) for t in wanted]
        )
        for delivery, target in zip(deliveries, wanted, strict=True):
            self._spawn(delivery, target)

    def _spawn(self, delivery: WebhookDelivery, target: WebhookTarget) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(delivery, target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _delay(self, attempt: int) -> float:
        delay: float = min(600.0, self.backoff_s * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.8, 1.2)

    async def _deliver(self, delivery: WebhookDelivery, target: WebhookTarget) -> None:
        attempts = delivery.attempts
        body = delivery.payload.encode()
        while True:
            attempts += 1
            status_code: int | None = None
            error: str | None = None
            try:
                await check_target(target.url, allow_private=self.allow_private)
                timestamp = int(time.time())
                response = await self._client.post(
                    target.url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": "netsuke-webhooks",
                        "Netsuke-Event": delivery.topic,
                        "Netsuke-Delivery": str(delivery.id),
                        "Netsuke-Timestamp": str(timestamp),
                        "Netsuke-Signature": sign(target.secret, timestamp, body),
                    },
                )
                status_code = response.status_code
                if 200 <= status_code < 300:
                    await self._store.webhooks.record_attempt(
                        delivery.id,
                        status="succeeded",
                        attempts=attempts,
                        response_status=status_code,
                        error=None,
                        next_attempt_at=None,
                    )
                    ATTEMPTS.labels("succeeded").inc()
                    log.info(
                        "webhook.delivered",
                        webhook=target.id,
                        delivery=delivery.id,
                        topic=delivery.topic,
                        attempts=attempts,
                    )
                    return
                error = f"answered HTTP {status_code}"
            except TargetRefusedError as exc:
                error = f"target refused: {exc.reason}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: could not deliver"
            if attempts >= self.max_attempts:
                await self._store.webhooks.record_attempt(
                    delivery.id,
                    status="failed",
                    attempts=attempts,
                    response_status=status_code,
                    error=error,
                    next_attempt_at=None,
                )
                ATTEMPTS.labels("failed").inc()
                log.warning("webhook.failed", webhook=target.id, delivery=delivery.id, error=error)
                self._bus.publish(
                    topics.WEBHOOK_FAILED,
                    webhook=target.id,
                    delivery=delivery.id,
                    event=delivery.event_id,
                    attempts=attempts,
                    error=error,
                )
                return
            delay = self._delay(attempts)
            await self._store.webhooks.record_attempt(
                delivery.id,
                status="pending",
                attempts=attempts,
                response_status=status_code,
                error=error,
                next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
            )
            ATTEMPTS.labels("retried").inc()
            await asyncio.sleep(delay)
