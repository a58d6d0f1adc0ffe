"""Serve a node's API on a free port, then use it over HTTP with the bootstrap admin key:
create an agent, update it with If-Match, and read the audit log."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx
import uvicorn

from netsuke.api import create_app, load_settings, open_node
from netsuke.observability import configure_logging


async def main() -> None:
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(port=0, database_url=f"sqlite:///{Path(tmp) / 'demo.db'}")
        async with open_node(settings) as node:
            app = create_app(settings, store=node.store, runtime=node.runtime)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            headers = {"Authorization": f"Bearer {node.bootstrap_secret}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}/api/v1", headers=headers
            ) as api:
                created = await api.post("/agents", json={"name": "greeter", "model": "offline"})
                print("created", created.json()["name"], "etag", created.headers["etag"])
                updated = await api.put(
                    "/agents/greeter",
                    json={"description": "says hello"},
                    headers={"If-Match": created.headers["etag"]},
                )
                print("updated to version", updated.json()["version"])
                stale = await api.put(
                    "/agents/greeter", json={"description": "x"}, headers={"If-Match": '"1"'}
                )
                print("stale write:", stale.status_code, stale.json()["title"])
                audit = (await api.get("/audit", params={"limit": 3})).json()["items"]
                for entry in audit:
                    print("audit:", entry["actor"], entry["action"], entry["outcome"])
            server.should_exit = True
            await serving


if __name__ == "__main__":
    asyncio.run(main())
