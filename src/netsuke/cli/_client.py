"""The CLI's HTTP client: a key, a base URL, problem+json turned into one-line errors.

``--url`` (default ``$NETSUKE_URL``, else ``http://127.0.0.1:8000``) and ``--key``
(default ``$NETSUKE_API_KEY``) reach a running ``netsuke serve``. A refusal by the server
(problem+json) or an unreachable server raises ``CliError``; the command prints
``netsuke: error: <message>`` on stderr and exits 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

__all__ = ["DEFAULT_URL", "CliError", "Client", "JsonOpt", "KeyOpt", "UrlOpt", "fail"]

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
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send a request; a status >= 400 not in ``allow`` raises ``CliError``."""
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.url}: {type(exc).__name__}") from None
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
