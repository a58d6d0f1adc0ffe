"""``netsuke functions add|run|ls|show|delete``: sandboxed functions on a running server.

``add -f FILE.py [--name N]`` stores the function named like the file (or ``--name``) from the
file's code, with ``--description``, ``--input-schema FILE.json``, ``--output-schema``,
``--allow-import M`` (repeatable), ``--timeout``, ``--memory-mb``: created the first time, a new
version after (the same code again: unchanged). ``run NAME [--args JSON] [--version N]`` runs
one call in the sandbox and prints the value as JSON (``--json``: the whole result, with
``stdout``, version, execution id and duration). Output the function printed goes to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail, json_object

__all__ = ["app"]

app = typer.Typer(
    name="functions",
    help="Sandboxed functions on a running server.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()
MERGE = {"Content-Type": "application/merge-patch+json"}


def _json_file(path: Path | None, what: str) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{what} {path}: {exc}", code=2) from None


@app.command("add")
def add(
    file: Annotated[Path, typer.Option("-f", "--file", help="Python file with the function.")],
    name: Annotated[str | None, typer.Option(help="Function name [the file's stem].")] = None,
    description: Annotated[
        str | None, typer.Option(help="What it does [kept; first time: its docstring].")
    ] = None,
    input_schema: Annotated[
        Path | None, typer.Option(help="JSON Schema file for the args [from the parameters].")
    ] = None,
    output_schema: Annotated[
        Path | None, typer.Option(help="JSON Schema file for the value.")
    ] = None,
    allow_import: Annotated[list[str] | None, typer.Option(help="A module it may import.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Wall-clock seconds per call [kept; first time: 30].")
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option(help="Address-space limit per call [kept; first time: 512].")
    ] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store a function (created, or a new version). An option left out keeps its stored value
    (a new function: its default; the description defaults to the docstring)."""
    try:
        try:
            code = file.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}", code=2) from None
        fname = name or file.stem
        given: dict[str, Any] = {
            "description": description,
            "input_schema": _json_file(input_schema, "input schema"),
            "output_schema": _json_file(output_schema, "output schema"),
            "allowed_imports": list(allow_import) if allow_import else None,
            "timeout_s": timeout,
            "memory_mb": memory_mb,
        }
        content = {"code": code, **{k: v for k, v in given.items() if v is not None}}
        with Client(url, key) as client:
            current = client.request("GET", f"/functions/{fname}", allow=(404,))
            if current.status_code == 404:
                stored = client.request("POST", "/functions", json={"name": fname, **content})
                outcome = "created"
            else:
                before = current.json()["version"]
                stored = client.request(  # a merge patch: what is not given is kept
                    "PATCH",
                    f"/functions/{fname}",
                    content=json.dumps(content),
                    headers={"If-Match": f'"{before}"', **MERGE},
                )
                outcome = "updated" if stored.json()["version"] != before else "unchanged"
    except CliError as exc:
        raise fail(exc) from None
    body = stored.json()
    if as_json:
        typer.echo(json.dumps({"name": fname, "outcome": outcome, "version": body["version"]}))
    else:
        typer.echo(f"{fname}: {outcome} (version {body['version']}, sha256 {body['sha256'][:12]})")


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Function name.")],
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    version: Annotated[int | None, typer.Option(help="A past version.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one call in the sandbox; print the value as JSON."""
    try:
        parsed = json_object(args, "--args")
        body: dict[str, Any] = {"args": parsed}
        if version is not None:
            body["version"] = version
        with Client(url, key, timeout=3700.0) as client:
            result = client.request("POST", f"/functions/{name}/execute", json=body).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    if result.get("stdout"):
        typer.echo(result["stdout"], nl=False, err=True)
    typer.echo(json.dumps(result["value"]))


@app.command("ls")
def ls(url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List functions (current versions)."""
    try:
        with Client(url, key) as client:
            items = client.pages("/functions", {"limit": 200})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table("name", "version", "async", "owner", "description")
    for f in items:
        table.add_row(
            f["name"], str(f["version"]), "yes" if f["is_async"] else "no",
            f["created_by"] or "", f["description"],
        )  # fmt: skip
    console.print(table)


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Function name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """Delete a function and all its versions."""
    try:
        with Client(url, key) as client:
            client.request("DELETE", f"/functions/{name}")
    except CliError as exc:
        raise fail(exc) from None
    typer.echo(f"{name}: deleted")
