"""Webhooks: signed deliveries to a real receiver on 127.0.0.1, retries with backoff, the
deliveries log, resumption after a restart, and targets refused on private ranges (SSRF)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from netsuke.api import TargetRefusedError, check_target, sign, verify_signature
from netsuke.events import topics

from .conftest import Live
from .receiver import Receiver

Factory = Callable[..., AbstractAsyncContextManager[Live]]
FAST = {"allow_private_webhooks": True, "webhook_backoff_s": 0.05, "webhook_max_attempts": 3}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def _deliveries(live: Live, hook: str, want: str, count: int = 1) -> list[dict]:
    async with asyncio.timeout(10):
        while True:
            items = (await live.admin.get(f"/api/v1/webhooks/{hook}/deliveries")).json()["items"]
            if sum(d["status"] == want for d in items) >= count:
                return items
            await asyncio.sleep(0.05)


async def test_an_event_is_delivered_signed_and_logged(
    live_factory: Factory, receiver: Receiver
) -> None:
    async with live_factory(**FAST) as live:
        r = await live.admin.post(
            "/api/v1/webhooks", json={"url": receiver.url, "topics": ["definition.*"]}
        )
        assert r.status_code == 201, r.text
        hook, secret = r.json()["webhook"]["id"], r.json()["secret"]
        assert secret.startswith("whsec_")
        await live.admin.post("/api/v1/agents", json={"name": "hooked"})
        (got,) = await receiver.wait_for(1)
        assert got.path == "/hook"
        assert got.headers["netsuke-event"] == topics.DEFINITION_CHANGED
        assert verify_signature(secret, got.headers["netsuke-signature"], got.body)
        assert not verify_signature(
            "whsec_wrong-secret-000", got.headers["netsuke-signature"], got.body
        )
        assert not verify_signature(secret, got.headers["netsuke-signature"], got.body + b" ")
        event = json.loads(got.body)
        assert event["topic"] == "definition.changed" and event["data"]["name"] == "hooked"
        log = await _deliveries(live, hook, "succeeded")
        assert log[0]["attempts"] == 1 and log[0]["response_status"] == 200
        listed = (await live.admin.get("/api/v1/webhooks")).text
        single = (await live.admin.get(f"/api/v1/webhooks/{hook}")).text
        assert secret not in listed and secret not in single


async def test_failures_are_retried_with_backoff_until_success(
    live_factory: Factory, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    async with live_factory(**FAST) as live:
        r = await live.admin.post(
            "/api/v1/webhooks", json={"url": receiver.url, "topics": ["agent.*"]}
        )
        hook = r.json()["webhook"]["id"]
        live.node.runtime.events.publish(topics.AGENT_STARTED, agent="a", session="s", user="u")
        received = await receiver.wait_for(3)
        assert len({x.headers["netsuke-delivery"] for x in received}) == 1
        log = await _deliveries(live, hook, "succeeded")
        assert log[0]["attempts"] == 3 and log[0]["error"] is None


async def test_a_delivery_gives_up_after_its_last_attempt(
    live_factory: Factory, receiver: Receiver
) -> None:
    receiver.statuses = [500] * 10
    async with live_factory(**FAST) as live:
        failed = live.node.runtime.events.subscribe(topics.WEBHOOK_FAILED)
        r = await live.admin.post(
            "/api/v1/webhooks", json={"url": receiver.url, "topics": ["agent.*"]}
        )
        hook = r.json()["webhook"]["id"]
        live.node.runtime.events.publish(topics.AGENT_STOPPED, agent="a", session="s")
        log = await _deliveries(live, hook, "failed")
        assert log[0]["attempts"] == 3 and "500" in log[0]["error"]
        event = await failed.get(timeout=5)
        assert event.data["webhook"] == hook and event.data["attempts"] == 3
        assert len(receiver.received) == 3
        failed.close()


async def test_pending_deliveries_are_resumed_after_a_restart(
    live_factory: Factory, receiver: Receiver
) -> None:
    async with live_factory(**FAST) as live:
        issued = await live.node.store.webhooks.create(receiver.url, ["x.*"], secret="s" * 32)
        await live.node.store.webhooks.enqueue([(issued.webhook.id, "n-1", "x.y", '{"id":"n-1"}')])
    assert receiver.received == [] or len(receiver.received) == 1
    receiver.received.clear()
    async with live_factory(**FAST) as live:
        (got,) = await receiver.wait_for(1)
        assert got.body == b'{"id":"n-1"}'
        await _deliveries(live, issued.webhook.id, "succeeded")


async def test_delete_removes_the_webhook_and_its_log(
    live_factory: Factory, receiver: Receiver
) -> None:
    async with live_factory(**FAST) as live:
        hook = (
            await live.admin.post("/api/v1/webhooks", json={"url": receiver.url, "topics": ["a.*"]})
        ).json()["webhook"]["id"]
        assert (await live.admin.delete(f"/api/v1/webhooks/{hook}")).status_code == 204
        assert (await live.admin.get(f"/api/v1/webhooks/{hook}")).status_code == 404
        assert (await live.admin.get(f"/api/v1/webhooks/{hook}/deliveries")).status_code == 404


FORBIDDEN = [
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.5/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/hook",
    "http://0.0.0.0/hook",
    "http://[fd00::1]/hook",
    "http://100.64.0.1/hook",
]


@pytest.mark.parametrize("url", FORBIDDEN)
async def test_private_and_loopback_targets_are_refused(live: Live, url: str) -> None:
    r = await live.admin.post("/api/v1/webhooks", json={"url": url, "topics": ["agent.*"]})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "url"
    assert (await live.node.store.webhooks.list()).items == []


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "http://user:pw@example.com/", "not a url", "http:///nohost"]
)
async def test_malformed_targets_are_refused(live: Live, url: str) -> None:
    r = await live.admin.post("/api/v1/webhooks", json={"url": url, "topics": ["agent.*"]})
    assert r.status_code == 422
    assert "pw" not in r.text


async def test_a_public_literal_address_passes_the_guard() -> None:
    await check_target("https://93.184.216.34/hook")  # checked only; nothing is sent
    with pytest.raises(TargetRefusedError):
        await check_target("https://93.184.216.34.nip.invalid/hook")


def test_signature_has_a_replay_window() -> None:
    body = b"{}"
    old = sign("k" * 20, int(time.time()) - 3600, body)
    assert not verify_signature("k" * 20, old, body)
    assert verify_signature("k" * 20, old, body, tolerance_s=7200)
    assert not verify_signature("k" * 20, "garbage", body)
