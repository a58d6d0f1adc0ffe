"""``agents set``, ``agents edit`` ($EDITOR is a script) and ``functions add`` keeping what
it is not given, against a real ``netsuke serve`` subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from .conftest import EXE, Server

WRITER = "name: {n}\ndescription: first\nsystem_prompt: You write.\ncapabilities: [write]\n"


def _apply(server: Server, tmp: Path, name: str) -> None:
    f = tmp / f"{name}.yaml"
    f.write_text(WRITER.format(n=name))
    assert server.run("agents", "apply", "-f", str(f)).returncode == 0


def _show(server: Server, name: str) -> dict[str, object]:
    shown: dict[str, object] = json.loads(server.run("agents", "show", name, "--json").stdout)
    return shown


def test_agents_set_changes_only_the_named_fields(server: Server, tmp_path: Path) -> None:
    _apply(server, tmp_path, "setme")
    out = server.run(
        "agents", "set", "setme", "description=only desc",
        "model_settings.temperature:=0.2", "capabilities:=[\"write\", \"edit\"]",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "setme: updated (version 2)"
    shown = _show(server, "setme")
    assert shown["description"] == "only desc" and shown["system_prompt"] == "You write."
    assert shown["capabilities"] == ["write", "edit"]
    assert shown["model_settings"]["temperature"] == 0.2  # type: ignore[index]
    same = server.run("agents", "set", "setme", "description=only desc")
    assert same.stdout.strip() == "setme: unchanged (version 2)"
    reset = server.run("agents", "set", "setme", "capabilities:=null")
    assert reset.returncode == 0 and _show(server, "setme")["capabilities"] == []


def test_agents_set_refuses_bad_input_in_one_line(server: Server, tmp_path: Path) -> None:
    _apply(server, tmp_path, "setbad")
    for args, code, word in [
        (["nokey"], 2, "key=text"),
        (["max_chain_depth:=deep"], 2, "not JSON"),
        (["modle=x"], 1, "modle"),
        (["max_chain_depth=deep"], 1, "max_chain_depth"),
    ]:
        proc = server.run("agents", "set", "setbad", *args)
        assert proc.returncode == code, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("netsuke: error: ") and word in lines[0]
    assert _show(server, "setbad")["version"] == 1


def _editor(tmp: Path, body: str) -> dict[str, str]:
    script = tmp / "editor.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"EDITOR": str(script), "VISUAL": ""}


def _edit(server: Server, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "NETSUKE_URL": server.url, "NETSUKE_API_KEY": server.key, **env}
    return subprocess.run(
        [EXE, "agents", "edit", name], capture_output=True, text=True, timeout=60, check=False,
        env=environ,
    )  # fmt: skip


def test_agents_edit_stores_what_the_editor_saved(server: Server, tmp_path: Path) -> None:
    _apply(server, tmp_path, "edited")
    env = _editor(tmp_path, 'sed -i "s/^description: first/description: edited/" "$1"\n')
    proc = _edit(server, "edited", env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "edited: updated (version 2)"
    shown = _show(server, "edited")
    assert shown["description"] == "edited" and shown["system_prompt"] == "You write."
    untouched = _edit(server, "edited", _editor(tmp_path, "true\n"))
    assert untouched.stdout.strip() == "edited: unchanged (version 2)"


def test_agents_edit_refuses_a_bad_edit_and_keeps_it(server: Server, tmp_path: Path) -> None:
    _apply(server, tmp_path, "badedit")
    proc = _edit(server, "badedit", _editor(tmp_path, 'echo "modle: x" >> "$1"\n'))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("netsuke: error: ") and "modle" in line and "kept in" in line
    kept = Path(line.rsplit("kept in ", 1)[1].rstrip(")"))
    assert "modle: x" in kept.read_text()
    kept.unlink()
    failed = _edit(server, "badedit", _editor(tmp_path, "exit 3\n"))
    assert failed.returncode == 2 and "status 3" in failed.stderr
    assert _show(server, "badedit")["version"] == 1


def test_functions_add_keeps_the_description_and_limits(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "twice.py"
    f.write_text('def twice(x: int) -> int:\n    """Doubles x."""\n    return 2 * x\n')
    first = server.run("functions", "add", "-f", str(f), "--timeout", "5")
    assert first.returncode == 0, first.stderr
    stored = json.loads(server.run("functions", "ls", "--json").stdout)
    mine = next(s for s in stored if s["name"] == "twice")
    assert mine["description"] == "Doubles x."  # the docstring by default
    server.run("functions", "add", "-f", str(f), "--description", "by hand")
    f.write_text('def twice(x: int) -> int:\n    """Doubles."""\n    return x + x\n')
    again = server.run("functions", "add", "-f", str(f))
    assert "updated (version 3" in again.stdout, again.stderr
    stored = json.loads(server.run("functions", "ls", "--json").stdout)
    mine = next(s for s in stored if s["name"] == "twice")
    assert mine["description"] == "by hand" and mine["limits"]["timeout_s"] == 5.0
