"""Logs carry context and trace ids, and never secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from netsuke.observability import configure_logging, get_logger, get_tracer
from netsuke.observability.testing import capture_spans


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    configure_logging("debug", json=True)
    yield capsys  # type: ignore[misc]
    configure_logging("debug")  # as tests/conftest.py left it
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


def test_redaction_decides_once_per_key_and_stays_right_when_its_cache_is_full() -> None:
    from netsuke.observability import _logging

    _logging._secret_keys.clear()
    for _ in range(3):  # the second and third lines reuse the decisions
        event = _logging.redact_secrets(None, "info", {"DB_Password": "p", "user": "u1"})
        assert event == {"DB_Password": "[redacted]", "user": "u1"}
    assert _logging._secret_keys == {"DB_Password": True, "user": False}
    for i in range(_logging._SECRET_KEYS_MAX + 10):  # keys made from data: bounded
        _logging.redact_secrets(None, "info", {f"k{i}": 1, f"token{i}": "t"})
    assert len(_logging._secret_keys) <= _logging._SECRET_KEYS_MAX
    event = _logging.redact_secrets(None, "info", {"session_token": "t", "k1": 1})
    assert event == {"session_token": "[redacted]", "k1": 1}


LIBRARY_SNIPPET = """
import asyncio, tempfile
from netsuke.node import Node

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        async with Node.open(f"sqlite:///{tmp}/n.db") as node:
            await node.register_agent({"name": "support", "capabilities": ["help"]})
            print("routed:", await node.process("Where is my order?", capabilities=["help"]))

asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_the_library_is_quiet_on_stdout_and_stderr_unless_configured(tmp_path: Path) -> None:
    """README's snippet: only the program's own prints, no debug or info lines anywhere."""
    import os
    import subprocess
    import sys

    script = tmp_path / "snippet.py"
    script.write_text(LIBRARY_SNIPPET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("routed: ")
    assert len(proc.stdout.splitlines()) == 1, proc.stdout
    assert proc.stderr == ""


def test_configure_logging_turns_the_library_up_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info")
    try:
        get_logger("t").info("visible_now")
    finally:
        configure_logging("debug")
    out = capsys.readouterr()
    assert "visible_now" in out.err and "visible_now" not in out.out
