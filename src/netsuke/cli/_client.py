"""The CLI's HTTP client: a key, a base URL, problem+json turned into one-line errors.

``--url`` (default ``$NETSUKE_URL``, else ``http://127.0.0.1:8000``) and ``--key``
(default ``$NETSUKE_API_KEY``) reach a running ``netsuke serve``. A refusal by the server
(problem+json) or an unreachable server raises ``CliError``; the command prints
``netsuke: error: <message>`` on stderr and exits 1. An unreachable server is said so, with
the way to start one (``unreachable``).

Ids can be given by a prefix (``resolve_id``): ``tasks get 01a2`` finds the one task whose id
starts with ``01a2``; a prefix naming several is refused in one line with their count.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

__all__ = [
    "DEFAULT_URL",
    "CliError",
    "Client",
    "JsonOpt",
    "KeyOpt",
    "UrlOpt",
    "fail",
    "resolve_id",
    "short_ids",
    "unreachable",
]

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="NETSUKE_URL", help="Server URL.", show_default=True),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", envvar="NETSUKE_API_KEY", help="API key (nsk_...).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


class CliError(Exception):
    """A failure to report in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1, status: int | None = None) -> None:
        self.message = message
        self.code = code
        self.status = status
        super().__init__(message)


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object an option holds; ``CliError`` (exit 2) naming ``option`` otherwise."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{option} is not JSON: {exc}", code=2) from None
    if not isinstance(parsed, dict):
        raise CliError(f"{option} must be a JSON object", code=2)
    return parsed


def unreachable(url: str, exc: BaseException) -> CliError:
    """The one-line error for a server that does not answer, with what to do about it."""
    why = {
        "ConnectError": "connection refused",
        "ConnectTimeout": "connection timed out",
        "ReadTimeout": "no answer in time",
        "RemoteProtocolError": "the connection broke",
        "ConnectionRefusedError": "connection refused",
        "TimeoutError": "connection timed out",
    }.get(type(exc).__name__, type(exc).__name__)
    return CliError(
        f"cannot reach {url} ({why}): is the server running? start one with `netsuke serve`, "
        "or point --url / NETSUKE_URL at it"
    )


def fail(exc: CliError) -> typer.Exit:
    typer.echo(f"netsuke: error: {exc.message}", err=True)
    return typer.Exit(exc.code)


class Client:
    """A thin synchronous client of ``/api/v1``."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 30.0) -> None:
        if not key:
            raise CliError("no API key: pass --key or set NETSUKE_API_KEY", code=2)
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {key}", "User-Agent": "netsuke-cli"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: str | bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send a request; a status >= 400 not in ``allow`` raises ``CliError``."""
        try:
            response = self._http.request(
                method, path, json=json, content=content, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from None
        if response.status_code >= 400 and response.status_code not in allow:
            raise CliError(_describe(response), status=response.status_code)
        return response

    def pages(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paginated listing."""
        items: list[Any] = []
        query = dict(params or {})
        while True:
            body = self.request("GET", path, params=query).json()
            items.extend(body["items"])
            if not body.get("next_cursor"):
                return items
            query["cursor"] = body["next_cursor"]


def _describe(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code}"
    title = problem.get("title") or f"HTTP {response.status_code}"
    detail = problem.get("detail")
    message = f"{title} ({response.status_code})" + (f": {detail}" if detail else "")
    execution = problem.get("execution_id")
    if isinstance(execution, str):
        message += f" (netsuke executions get {execution})"
    retry = response.headers.get("retry-after")
    return message + (f"; retry after {retry} s" if retry else "")


def resolve_id(
    client: Client,
    given: str,
    *,
    what: str,
    get: str,
    listing: str,
    params: dict[str, Any] | None = None,
    field: str = "id",
    server_filter: str | None = None,
) -> str:
    """The full id ``given`` names: itself when ``GET {get}/{given}`` finds it, else the one
    item of ``listing`` whose ``field`` starts with it (the listing filtered by the server
    when it takes the ``server_filter`` query parameter, else here). ``CliError`` when none
    does or when several do (their count, a few of them)."""
    if not given:
        raise CliError(f"give a {what} id (or a prefix of one)", code=2)
    found = client.request("GET", f"{get}/{given}", allow=(404, 422))
    if found.status_code < 400:
        return given
    query = dict(params or {})
    if server_filter is not None:
        query[server_filter] = given
    matches = [
        str(item[field])
        for item in client.pages(listing, query)
        if str(item[field]).startswith(given)
    ]
    if not matches:
        raise CliError(f"no {what} id starts with {given!r}", status=404)
    if len(set(matches)) > 1:
        shown = ", ".join(sorted(set(matches))[:3])
        raise CliError(
            f"{what} id prefix {given!r} is ambiguous: {len(set(matches))} {what}s start with it "
            f"({shown}, ...); give more characters",
            code=2,
        )
    return matches[0]


def short_ids(ids: list[str], minimum: int = 8) -> dict[str, str]:
    """Each id cut to the shortest prefix (at least ``minimum`` characters) that no other id
    in ``ids`` shares, so a table stays narrow and every row can be named by its prefix."""
    unique = sorted(set(ids))
    out: dict[str, str] = {}
    for i, full in enumerate(unique):
        need = minimum
        for other in (unique[i - 1] if i else None, unique[i + 1] if i + 1 < len(unique) else None):
            if other is None:
                continue
            common = 0
            while common < min(len(full), len(other)) and full[common] == other[common]:
                common += 1
            need = max(need, common + 1)
        out[full] = full[: min(need, len(full))]
    return out
