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


class _Text(str):
    pass


CONSOLE_EVENTS: list[dict[str, object]] = [
    {
        "timestamp": "2026-12-06T22:00:00.123456Z",
        "level": "info",
        "event": "api.request",
        "method": "POST",
        "route": "/api/v1/sessions/{session_id}/messages",
        "status": 200,
        "duration_ms": 12.345,
        "key_prefix": "nsk_0123abcd",
        "request_id": "0123456789abcdef",
    },
    {"event": "no level, no time", "b": None, "a": [1, "x y"], "c": {"k": "v"}},
    {"level": "warning", "event": "spaces and quotes", "s": "a b", "q": 'say "hi"', "t": "it's"},
    {"level": "error", "event": "", "eq": "a=b", "nl": "x\ny", "tab": "x\ty", "cr": "x\r"},
    {"level": "trace", "event": "a level of its own", "empty": "", "sub": _Text("plain")},
    {"level": "debug", "event": "x" * 40, "logger": "netsuke.api", "logger_name": "n", "u": "é"},
    {"timestamp": "", "level": "critical", "event": "empty time", "n": 1.5, "flag": True},
    {"level": "info", "event": "with stack", "stack": "Stack (most recent call last): ..."},
    {"level": "info", "event": "with exception", "exception": "Traceback ...\nValueError: x"},
]


@pytest.mark.parametrize("event", CONSOLE_EVENTS)
def test_console_lines_are_the_console_renderers_lines(event: dict[str, object]) -> None:
    """The one-pass console line is structlog's ``ConsoleRenderer(colors=False)`` line."""
    from netsuke.observability._logging import ConsoleLine, _console_exception

    reference = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_console_exception)
    assert ConsoleLine(_console_exception)(None, "info", dict(event)) == reference(
        None, "info", dict(event)
    )


def test_console_lines_render_exceptions_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    try:
        try:
            raise ValueError("boom")
        except ValueError as exc:
            get_logger("t").error("failed", exc_info=exc, user="u1")
    finally:
        configure_logging("debug")
    err = capsys.readouterr().err
    assert "[error    ] failed" in err and "user=u1" in err
    assert "ValueError: boom" in err and "Traceback" in err


SCRUB_LINES = [
    "api.request key_prefix=nsk_0123abcd method=POST status=200",
    "key nsk_0123abcd_SECRET-value and NSK_0123abcd_upper",
    "AUTHORIZATION: BEARER abc.def, Cookie=sid; x-Api-Key: k1 Set-Cookie: a=b",
    "basic%20dXNlcjpwYXNz and Basic  Zm9v",
    "whsec_abc sk-0123456789abcdef sk-short",
    "Authorization: Ba\u017fic SECRETVALUE authori\u0131ation: x",  # Unicode case folding
    "nothing to hide here at all",
    "",
]


@pytest.mark.parametrize("line", SCRUB_LINES)
def test_scrubbing_skips_only_substitutions_that_cannot_match(line: str) -> None:
    from netsuke.observability import _logging

    reference = line
    for pattern, replacement in _logging._PATTERNS:
        reference = pattern.sub(replacement, reference)
    assert _logging.scrub_secrets(line) == reference


def test_merged_context_is_structlogs_merged_context() -> None:
    from netsuke.observability._logging import merge_contextvars

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="r1", agent="support", gone="x")
    structlog.contextvars.unbind_contextvars("gone")
    try:
        ours = merge_contextvars(None, "info", {"event": "e", "agent": "given"})
        theirs = structlog.contextvars.merge_contextvars(
            None, "info", {"event": "e", "agent": "given"}
        )
    finally:
        structlog.contextvars.clear_contextvars()
    assert ours == theirs == {"event": "e", "agent": "given", "request_id": "r1"}
