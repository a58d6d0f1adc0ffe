"""``netsuke agents``: list, show, apply, delete, version history, rollback and check, over
HTTP.

``check NAME`` asks the server whether the agent's model can work there (unknown provider,
missing client library, key or base URL, a base URL its address guard refuses) and exits 1,
one line per problem, when it cannot. ``apply`` is refused (422) for the same problems.

``apply -f FILE`` (repeatable; a folder applies every ``*.yaml`` in it) checks each file
locally, then creates the agent or updates it with ``If-Match`` on the version it just read,
so a concurrent change is refused rather than overwritten. Several files show a progress bar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from netsuke.store import DefinitionFileError, load_agent_file

from ._client import Client, CliError, JsonOpt, KeyOpt, UrlOpt, fail

__all__ = ["app"]

app = typer.Typer(
    name="agents",
    help="Agent definitions on a running server.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command("ls")
def list_agents(
    url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = None, as_json: JsonOpt = False
) -> None:
    """List agents (current versions)."""
    try:
        with Client(url, key) as client:
            items = client.pages("/agents", {"limit": 200})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json(items)
        return
    table = Table("name", "model", "version", "capabilities", "description")
    for a in items:
        table.add_row(
            a["name"], a["model"], str(a["version"]), ", ".join(a["capabilities"]), a["description"]
        )
    console.print(table)


@app.command("show")
def show_agent(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    version: Annotated[int | None, typer.Option(help="A past version.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a definition as YAML (or JSON)."""
    path = f"/agents/{name}" + (f"/versions/{version}" if version else "")
    try:
        with Client(url, key) as client:
            data = client.request("GET", path).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json(data)
        return
    meta = {
        k: data.pop(k) for k in ("version", "content_hash", "comment", "created_by", "created_at")
    }
    typer.echo(f"# version {meta['version']} by {meta['created_by']} at {meta['created_at']}")
    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            out.append(path)
    return out


def _apply_one(client: Client, path: Path) -> dict[str, Any]:
    draft = load_agent_file(path)
    body = draft.model_dump(mode="json")
    current = client.request("GET", f"/agents/{draft.name}", allow=(404,))
    if current.status_code == 404:
        created = client.request("POST", "/agents", json=body).json()
        return {"name": draft.name, "outcome": "created", "version": created["version"]}
    etag = current.headers.get("etag", "*")
    content = {k: v for k, v in body.items() if k != "name"}
    updated = client.request(
        "PUT", f"/agents/{draft.name}", json=content, headers={"If-Match": etag}
    ).json()
    outcome = "unchanged" if updated["version"] == current.json()["version"] else "updated"
    return {"name": draft.name, "outcome": outcome, "version": updated["version"]}


@app.command("apply")
def apply_agents(
    files: Annotated[
        list[Path], typer.Option("-f", "--file", help="A YAML definition file or a folder.")
    ],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update agents from YAML files (each checked locally first)."""
    paths = _files(files)
    results: list[dict[str, Any]] = []
    try:
        for path in paths:  # check every file before changing anything
            load_agent_file(path)
        with Client(url, key) as client:
            if len(paths) > 1 and not as_json:
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task("applying", total=len(paths))
                    for path in paths:
                        results.append(_apply_one(client, path))
                        progress.advance(task)
            else:
                results = [_apply_one(client, p) for p in paths]
    except DefinitionFileError as exc:
        raise fail(CliError(str(exc), code=2)) from None
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json(results)
        return
    for r in results:
        typer.echo(f"{r['name']}: {r['outcome']} (version {r['version']})")


@app.command("delete")
def delete_agent(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
) -> None:
    """Delete an agent and all its versions."""
    try:
        with Client(url, key) as client:
            current = client.request("GET", f"/agents/{name}")
            client.request(
                "DELETE", f"/agents/{name}", headers={"If-Match": current.headers["etag"]}
            )
    except CliError as exc:
        raise fail(exc) from None
    typer.echo(f"{name}: deleted")


@app.command("versions")
def versions(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List an agent's versions, oldest first."""
    try:
        with Client(url, key) as client:
            items = client.pages(f"/agents/{name}/versions", {"limit": 500})
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json(items)
        return
    table = Table("version", "created", "by", "comment")
    for v in items:
        table.add_row(str(v["version"]), v["created_at"], v["created_by"] or "", v["comment"])
    console.print(table)


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    version: Annotated[int, typer.Argument(help="Version to restore.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a new version with the content of VERSION."""
    try:
        with Client(url, key) as client:
            data = client.request(
                "POST", f"/agents/{name}/rollback", json={"version": version}
            ).json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json(data)
        return
    typer.echo(f"{name}: version {data['version']} (content of version {version})")


@app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that an agent's model can work on the server before its first turn (provider,
    client library, key, base URL and the node's address guard). Exit 1 when it cannot."""
    try:
        with Client(url, key) as client:
            data = client.request("GET", f"/agents/{name}/check").json()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        _print_json(data)
    elif data["ok"]:
        typer.echo(f"{name}: ok (version {data['version']}, model {data['model']})")
    else:
        for problem in data["problems"]:
            typer.echo(f"{name}: {problem['field']}: {problem['reason']}", err=True)
    if not data["ok"]:
        raise typer.Exit(1)
