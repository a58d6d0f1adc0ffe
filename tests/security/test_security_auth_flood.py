"""Issue 14 item 7: requests without a valid key cost the node no write.

A client with no key or a wrong key is rate limited per client address (429 with Retry-After
once its bucket is empty; another address and a valid key are not affected), and each failure
is a Prometheus counter plus a sampled log line, never an audit row. Real server on loopback,
real SQLite file; the second address is 127.0.0.2 (loopback too)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import httpx
import pytest
import structlog

from netsuke.api import Settings
from tests.api.conftest import Live, serve

FLOOD = 120
BURST = 10
WRONG_KEY = "nsk_deadbeef_" + "A" * 43


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        port=0,
        rate_limit_per_minute=0,
        anonymous_rate_limit_per_minute=60,
        anonymous_rate_limit_burst=BURST,
    )


def _audit_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "api.db") as conn:
        count: int = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    return count


async def _failures(live: Live) -> dict[str, float]:
    text = (await live.client().get("/metrics")).text
    found = re.findall(r'^netsuke_api_auth_failures_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("headers", "path", "reason"),
    [
        ({}, "/api/v1/tasks", "missing"),
        ({"Authorization": f"Bearer {WRONG_KEY}"}, "/api/v1/agents", "invalid"),
    ],
)
async def test_a_flood_without_a_valid_key_is_limited_counted_and_never_audited(
    tmp_path: Path, headers: dict[str, str], path: str, reason: str
) -> None:
    async with serve(_settings(tmp_path)) as live:
        before_rows = _audit_rows(tmp_path)
        before = await _failures(live)
        flood = live.client(**headers)
        with structlog.testing.capture_logs() as logs:
            answers = [
                (await flood.post(path, json={"kind": "k", "name": "a"})) for _ in range(FLOOD)
            ]
        statuses = [r.status_code for r in answers]
        # the address's bucket: about BURST refusals as 401, the rest 429 with Retry-After
        assert set(statuses) == {401, 429}
        assert BURST <= statuses.count(401) <= BURST + 5
        limited = [r for r in answers if r.status_code == 429]
        assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
        assert all(r.headers["content-type"] == "application/problem+json" for r in limited)
        # no audit row for any of them: nothing was changed
        assert _audit_rows(tmp_path) == before_rows
        # every failure counted, by reason
        after = await _failures(live)
        assert after.get(reason, 0) - before.get(reason, 0) == statuses.count(401)
        assert after.get("limited", 0) - before.get("limited", 0) == len(limited)
        # and logged sampled: far fewer lines than failures, each saying how many it stands for
        lines = [e for e in logs if e["event"] == "api.auth_failed"]
        assert 1 <= len(lines) < FLOOD // 5
        assert len(lines) + sum(e["suppressed"] for e in lines) <= FLOOD
        assert all(e["client"] == "127.0.0.1" for e in lines)

        # another address is not limited by this one's flood
        other = httpx.AsyncClient(
            base_url=live.url,
            headers=headers,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
            timeout=10,
        )
        live.clients.append(other)
        assert (await other.post(path, json={"kind": "k", "name": "a"})).status_code == 401
        # nor is a valid key from the flooded address, whose mutation is audited as before
        made = await live.admin.post("/api/v1/tasks", json={"kind": "k"})
        assert made.status_code == 201, made.text
        assert _audit_rows(tmp_path) > before_rows
