"""Issue 14 item 1: a failing request never renders locals, stays bounded, leaks no secret.

A real node on loopback (``tests.api.conftest.serve``) whose store breaks under it (its
``webhooks`` table dropped by another connection, as a corrupt or half-restored database
would): the request answers 500 and the log, in console and in JSON mode, holds the error
but none of the caller's API key, cookie, webhook secret or model key."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.observability import (
    MAX_EXCEPTION_CHARS,
    configure_logging,
    format_exception,
    get_logger,
    scrub_secrets,
)
from tests.api.conftest import serve

MODEL_KEY = "sk-model-key-0123456789abcdefXYZ"
WEBHOOK_SECRET = "hook-secret-0123456789-abcdef"


@pytest.fixture
def restore_logging() -> object:
    yield None
    configure_logging("info")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("json_mode", [False, True], ids=["console", "json"])
async def test_failing_request_logs_no_locals_and_no_secret(
    json_mode: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: object,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", MODEL_KEY)
    configure_logging("info", json=json_mode, capture_stdlib=True)
    db = tmp_path / "api.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        port=0,
        rate_limit_per_minute=0,
        allow_private_webhooks=True,
    )
    async with serve(settings) as live:
        key = live.admin_key
        client = live.client(key, Cookie=f"netsuke_key={key}")
        ok = await client.get("/api/v1/webhooks")
        assert ok.status_code == 200
        with sqlite3.connect(db) as conn:  # the store breaks under the running node
            conn.execute("DROP TABLE webhook_deliveries")
            conn.execute("DROP TABLE webhooks")
        capsys.readouterr()
        r = await client.post(
            "/api/v1/webhooks",
            json={
                "url": "http://127.0.0.1:9/hook",
                "topics": ["*"],
                "secret": WEBHOOK_SECRET,
                "description": f"model key {MODEL_KEY}",
            },
        )
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert key not in r.text and WEBHOOK_SECRET not in r.text
    err = capsys.readouterr().err
    assert "api.internal_error" in err and "no such table" in err
    secret_part = key.split("_", 2)[2]
    for secret in (secret_part, WEBHOOK_SECRET, MODEL_KEY):
        assert secret not in err
    # no frame's locals: the request scope, its headers and the parsed body never appear
    assert "authorization" not in err.lower()
    assert "'headers':" not in err and "'type': 'http'" not in err
    # bounded: each rendered exception within the limit, the whole output small
    assert len(err) < 8 * MAX_EXCEPTION_CHARS
    if json_mode:
        lines = [json.loads(line) for line in err.splitlines() if line.strip()]
        failures = [line for line in lines if "exception" in line]
        assert failures
        assert all(len(line["exception"]) <= MAX_EXCEPTION_CHARS + 100 for line in failures)


def _recurse(depth: int, secret: str) -> None:
    if depth == 0:
        raise ValueError("x" * 200_000)
    _recurse(depth - 1, secret)


@pytest.mark.timeout(30)
def test_exception_rendering_is_bounded_and_has_no_locals(
    capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    configure_logging("info")
    try:
        _recurse(600, secret="nsk_0123abcd_local-secret-value-that-must-not-print")
    except ValueError as exc:
        rendered = format_exception(exc)
        get_logger("t").error("failed", exc_info=exc)
    assert len(rendered) <= MAX_EXCEPTION_CHARS + 100
    assert "local-secret-value" not in rendered
    err = capsys.readouterr().err
    assert "local-secret-value" not in err and len(err) < 2 * MAX_EXCEPTION_CHARS


@pytest.mark.parametrize(
    "line",
    [
        "(b'authorization', b'Bearer nsk_0123abcd_SECRETVALUE-123'), (b'cookie', b'SECRETVALUE')",
        json.dumps({"error": 'headers {"Authorization": "Token SECRETVALUE"}'}),
        json.dumps({"error": 'cookie: "netsuke_key=SECRETVALUE"'}),
        "Authorization: Basic SECRETVALUE, next",
        "set-cookie=SECRETVALUE; path=/",
        "X-API-Key: SECRETVALUE",
        "signed with whsec_SECRETVALUE",
        "model key sk-SECRETVALUE-abcdef",
        "url https://host/?q=1 Bearer SECRETVALUE",
    ],
)
def test_secret_shaped_values_are_scrubbed_from_any_line(line: str) -> None:
    out = scrub_secrets(line)
    assert "SECRETVALUE" not in out
    if line.startswith("{"):
        json.loads(out)  # a JSON line stays JSON
