"""``netsuke functions add|run|ls|delete`` against a real ``netsuke serve`` subprocess."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import Server


def test_add_run_ls_delete(server: Server, tmp_path: Path) -> None:
    if not (shutil.which("bwrap") or shutil.which("unshare")):
        pytest.skip("no isolation mechanism (bubblewrap or unshare) to run functions")
    f = tmp_path / "greet.py"
    f.write_text(
        "def greet(who: str) -> str:\n    print('greeting', who)\n    return 'hi ' + who\n"
    )
    added = server.run_process("functions", "add", "-f", str(f), "--description", "says hi")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("greet: created (version 1, sha256 ")
    again = server.run("functions", "add", "-f", str(f), "--description", "says hi", "--json")
    assert json.loads(again.stdout) == {"name": "greet", "outcome": "unchanged", "version": 1}
    f.write_text("def greet(who: str) -> str:\n    return 'hello ' + who\n")
    assert "updated (version 2" in server.run("functions", "add", "-f", str(f)).stdout

    ran = server.run_process("functions", "run", "greet", "--args", '{"who": "ann"}')
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == "hello ann"
    old = server.run(
        "functions", "run", "greet", "--args", '{"who": "bo"}', "--version", "1", "--json"
    )
    result = json.loads(old.stdout)
    assert result["value"] == "hi bo" and result["stdout"] == "greeting bo\n"
    listed = json.loads(server.run("functions", "ls", "--json").stdout)
    assert [(f["name"], f["version"]) for f in listed] == [("greet", 2)]

    bad_args = server.run("functions", "run", "greet", "--args", "[1]")
    assert bad_args.returncode == 2 and "JSON object" in bad_args.stderr
    refused = server.run("functions", "run", "greet", "--args", '{"who": 5}')
    assert refused.returncode == 1 and "422" in refused.stderr
    bad_code = tmp_path / "evil.py"
    bad_code.write_text("def evil():\n    return eval('1')\n")
    denied = server.run("functions", "add", "-f", str(bad_code))
    assert denied.returncode == 1 and "422" in denied.stderr
    assert server.run("functions", "delete", "greet").stdout.strip() == "greet: deleted"
    missing = server.run("functions", "run", "greet")
    assert missing.returncode == 1 and "404" in missing.stderr
