"""``netsuke agents set NAME k=v ...`` and ``netsuke agents edit NAME``: change a stored agent
without losing the fields you did not touch.

* ``set`` sends a JSON merge patch (``PATCH /agents/NAME``): ``key=text`` sets a string,
  ``key:=json`` a JSON value (number, list, object, ``null`` to reset the field to its
  default); a dotted key reaches into an object (``model_settings.temperature:=0.2``). Every
  other field is kept. Prints ``NAME: updated|unchanged (version N)``.
* ``edit`` opens the current definition as YAML in ``$VISUAL`` or ``$EDITOR`` (else ``vi``);
  when the editor exits 0 with a changed file, the file is checked locally and stored as the
  next version with ``If-Match`` on the version opened, so a change made meanwhile is refused
  (412), not overwritten. A refused or invalid edit is kept in a file named in the error.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from netsuke.store import DefinitionFileError, load_agent_file

from ._agents import app
from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["edit", "parse_assignments", "set_fields"]

MERGE = {"Content-Type": "application/merge-patch+json"}
_META = ("version", "content_hash", "comment", "created_by", "created_at")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["a=text", "b.c:=2"]`` as a merge patch ``{"a": "text", "b": {"c": 2}}``;
    ``CliError`` (exit 2) naming the item that does not parse."""
    patch: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or key == ":":
            raise CliError(f"{item!r}: expected key=text or key:=json", code=2)
        value: Any = raw
        if key.endswith(":"):
            key = key[:-1]
            try:
                value = json.loads(raw)
            except ValueError as exc:
                raise CliError(f"{key}: not JSON ({exc})", code=2) from None
        path = key.split(".")
        if any(not part for part in path):
            raise CliError(f"{item!r}: empty part in the key", code=2)
        node = patch
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CliError(f"{key}: {part} is set twice", code=2)
            node = child
        node[path[-1]] = value
    return patch


@app.command("set")
def set_fields(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    assignments: Annotated[
        list[str], typer.Argument(help="key=text or key:=json (dotted keys reach nested fields).")
    ],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change some fields of an agent; every other field is kept."""
    try:
        patch = parse_assignments(assignments)
        with Client(url, key) as client:
            before = client.request("GET", f"/agents/{name}").json()["version"]
            data = client.request(
                "PATCH", f"/agents/{name}", content=json.dumps(patch), headers=MERGE
            ).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    outcome = "unchanged" if data["version"] == before else "updated"
    typer.echo(f"{name}: {outcome} (version {data['version']})")


def _editor() -> list[str]:
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return shlex.split(command)


@app.command("edit")
def edit(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """Edit an agent's definition as YAML in $EDITOR; store it as the next version."""
    try:
        with Client(url, key) as client:
            current = client.request("GET", f"/agents/{name}")
            data = current.json()
            version = data["version"]
            for field in _META:
                data.pop(field, None)
            text = (
                f"# {name}, version {version}: save and quit to store the next version\n"
                + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
            )
            fd, tmp = tempfile.mkstemp(prefix=f"netsuke-{name}-", suffix=".yaml")
            path = Path(tmp)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            try:
                status = subprocess.run([*_editor(), str(path)], check=False).returncode
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise CliError(
                    f"cannot run the editor {_editor()[0]!r}: {exc.strerror}", code=2
                ) from None
            if status != 0:
                path.unlink(missing_ok=True)
                raise CliError(f"the editor exited with status {status}; nothing changed", code=2)
            if path.read_text() == text:
                path.unlink(missing_ok=True)
                typer.echo(f"{name}: unchanged (version {version})")
                return
            try:
                draft = load_agent_file(path)
            except DefinitionFileError as exc:
                raise CliError(f"{exc} (your edit is kept in {path})", code=2) from None
            if draft.name != name:
                raise CliError(f"name: an agent cannot be renamed (your edit is in {path})", 2)
            content = {k: v for k, v in draft.model_dump(mode="json").items() if k != "name"}
            try:
                updated = client.request(
                    "PUT",
                    f"/agents/{name}",
                    json=content,
                    headers={"If-Match": current.headers.get("etag", f'"{version}"')},
                ).json()
            except CliError as exc:
                raise CliError(f"{exc.message} (your edit is kept in {path})", exc.code) from None
            path.unlink(missing_ok=True)
    except CliError as exc:
        raise fail(exc) from None
    outcome = "unchanged" if updated["version"] == version else "updated"
    typer.echo(f"{name}: {outcome} (version {updated['version']})")
