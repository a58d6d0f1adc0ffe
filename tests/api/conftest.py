"""A real node per test: a SQLite file store, a runtime, the app on uvicorn on 127.0.0.1.

``live`` yields a ``Live`` with the base URL, the bootstrap admin key, the node (store and
runtime, to publish events or inspect the store) and ``httpx.AsyncClient``s made with keys.
``live_factory(**settings)`` starts one with other settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from netsuke.api import ServerNode, Settings, create_app, open_node


@dataclass
class Live:
    url: str
    admin_key: str
    node: ServerNode
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, key: str | None = None, **headers: str) -> httpx.AsyncClient:
        all_headers = dict(headers)
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        client = httpx.AsyncClient(base_url=self.url, headers=all_headers, timeout=10)
        self.clients.append(client)
        return client

    @property
    def admin(self) -> httpx.AsyncClient:
        return self.client(self.admin_key)

    async def key(self, role: str, name: str | None = None) -> str:
        issued = await self.node.store.api_keys.create(name or f"{role}-key", role)  # type: ignore[arg-type]
        return issued.secret


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Live]:
    async with open_node(settings) as node:
        admin_key = node.bootstrap_secret or (
            (await node.store.api_keys.create("test-admin", "admin")).secret
        )
        app = create_app(settings, store=node.store, runtime=node.runtime, extras=node.extras)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "server failed to start"
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        live = Live(f"http://127.0.0.1:{port}", admin_key, node)
        try:
            yield live
        finally:
            for client in live.clients:
                await client.aclose()
            server.should_exit = True
            await task


@pytest.fixture
def live_factory(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Live]]:
    def make(**overrides: Any) -> AbstractAsyncContextManager[Live]:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
            "port": 0,
            "rate_limit_per_minute": 0,
            **overrides,
        }
        return serve(Settings(**values))

    return make


@pytest.fixture
async def live(
    live_factory: Callable[..., AbstractAsyncContextManager[Live]],
) -> AsyncIterator[Live]:
    async with live_factory() as running:
        yield running
