"""docs/getting-started.md, run: every ``sh`` block of the page against a real ``netsuke
serve`` on loopback, in order, in one shell, as a newcomer would type them.

The page's blocks are taken as written. Filled in: the admin key the node printed (the page
says ``nsk_...``), the model server's URL (a fake OpenAI-compatible server on loopback stands
in for Ollama) and, for the PostgreSQL block, a throwaway PostgreSQL's URL. The block starting
``# terminal 1`` is the node, started in the background; the block starting ``# PostgreSQL``
runs against PostgreSQL (skipped only when PostgreSQL is absent, failed under ``CI=true``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from netsuke.store.testing import TemporaryPostgres

from .agents.fake_openai import fake_openai_server

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "getting-started.md"
BIN = str(Path(sys.executable).parent)
OLLAMA_URL = "http://127.0.0.1:11434/v1"
PG_URL = "postgresql+asyncpg://netsuke:secret@127.0.0.1:5432/netsuke"


def blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSUKE_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def _need_isolation() -> None:
    if shutil.which("bwrap") or shutil.which("unshare"):
        return
    reason = "neither bubblewrap nor unshare is installed (the functions section needs one)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires an isolation mechanism: {reason}")
    pytest.skip(reason)


def test_the_page_has_the_blocks_this_test_expects() -> None:
    found = blocks()
    assert sum(b.startswith("# terminal 1") for b in found) == 1
    assert sum(b.startswith("# PostgreSQL") for b in found) == 1
    assert "export NETSUKE_API_KEY=nsk_...\n" in "".join(found)
    assert OLLAMA_URL in "".join(found)


@pytest.mark.timeout(300)
def test_every_command_of_getting_started_runs(tmp_path: Path) -> None:
    _need_isolation()
    shutil.copytree(ROOT / "agents", tmp_path / "agents")
    found = blocks()
    node = next(b for b in found if b.startswith("# terminal 1"))
    steps = [b for b in found if not b.startswith(("# terminal 1", "# PostgreSQL"))]
    servers = ExitStack()
    fake = servers.enter_context(fake_openai_server())  # first: the node's allow-list names it
    allowed = urlsplit(OLLAMA_URL).netloc
    assert allowed in node  # the node allows the local model server of section 4
    node = node.replace(allowed, urlsplit(fake.url).netloc)
    proc = subprocess.Popen(
        ["bash", "-c", node], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=tmp_path, env=_env(NETSUKE_PORT="0"), start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = key = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (url is None or key is None):
            line = proc.stdout.readline()
            if not line:
                break
            if m := re.search(r"running at (http://\S+)", line):
                url = m.group(1)
            if m := re.search(r"admin API key \(shown once, keep it\): (nsk_\S+)", line):
                key = m.group(1)
        assert url and key, "the node did not print its URL and key"
        script = "set -euo pipefail\n" + "\n".join(steps)
        script = script.replace("nsk_...", key).replace(OLLAMA_URL, fake.url)
        run = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=240,
            check=False, cwd=tmp_path, env=_env(NETSUKE_URL=url),
        )  # fmt: skip
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        assert [r["model"] for r in fake.requests] == ["llama3.2"]
    finally:
        servers.close()
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    out = run.stdout
    assert "[offline]" in out  # the greeter answered
    assert "writer: created (version 1)" in out
    assert "echo: Write about tea" in out  # the model server answered through the node
    assert '"HELLO!"' in out  # the function ran in the sandbox
    assert '"kind": "report"' in out  # the task, found by a prefix of its id
    assert out.count("nsk_") >= 1  # keys create --local printed a key


@pytest.mark.timeout(120)
def test_the_postgresql_block_runs(postgres_server: TemporaryPostgres, tmp_path: Path) -> None:
    block = next(b for b in blocks() if b.startswith("# PostgreSQL"))
    url = postgres_server.create_database()
    run = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block.replace(PG_URL, url)],
        capture_output=True, text=True, timeout=100, check=False, cwd=tmp_path, env=_env(),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "(up to date)" in run.stdout and "nsk_" in run.stdout
