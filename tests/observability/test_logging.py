"""Logs carry context and trace ids, and never secrets."""

from __future__ import annotations

import json

import pytest
import structlog

from netsuke.observability import configure_logging, get_logger, get_tracer
from netsuke.observability.testing import capture_spans


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    configure_logging("debug", json=True)
    yield capsys  # type: ignore[misc]
    configure_logging("info")
    structlog.contextvars.clear_contextvars()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_log_lines_carry_bound_context_and_trace_ids(json_logs: pytest.CaptureFixture[str]) -> None:
    log = get_logger("t")
    structlog.contextvars.bind_contextvars(agent="support", session="support-u1")
    with capture_spans() as spans, get_tracer("t").start_as_current_span("turn") as span:
        log.info("turn_started", execution="e1")
        ctx = span.get_span_context()
    log.info("outside")
    inside, outside = _lines(json_logs)
    assert inside["agent"] == "support" and inside["session"] == "support-u1"
    assert inside["execution"] == "e1"
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in outside
    assert spans.names() == ["turn"]


def test_secret_named_keys_are_redacted(json_logs: pytest.CaptureFixture[str]) -> None:
    get_logger("t").warning(
        "login", api_key="nk_live_abc", Authorization="Bearer xyz", password="p", user="u1"
    )
    out = json_logs.readouterr().err
    assert "nk_live_abc" not in out and "xyz" not in out and '"p"' not in out
    line = json.loads(out.splitlines()[-1])
    assert line["api_key"] == line["Authorization"] == line["password"] == "[redacted]"
    assert line["user"] == "u1"
