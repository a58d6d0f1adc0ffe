"""Schemathesis against the published OpenAPI spec of a real ``netsuke serve``: thousands of
generated requests (coverage, fuzzing and stateful phases), zero server errors allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import start_server, stop_server

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_generated_requests_never_get_a_server_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETSUKE_RATE_LIMIT_PER_MINUTE", "0")
    server = start_server(tmp_path)
    try:
        proc = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{server.url}/api/v1/openapi.json",
                "-H",
                f"Authorization: Bearer {server.key}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "30",
                "--workers",
                "1",
                "--seed",
                "7",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
            cwd=tmp_path,
        )
    finally:
        stop_server(server)
    tail = proc.stdout[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail.split("Test cases:")[-1], tail
