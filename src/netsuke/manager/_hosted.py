"""A Netsuke agent defined as data, hosted by a package, so "an agent" means the same thing in
a node and in a package.

The package's program opens a node on its own store (``AGENT_DATABASE_URL`` or a SQLite file
in ``AGENT_DATA_DIR``), registers the definition file (the ``agents/<name>.yaml`` format) and
answers the ``chat`` command (``params.message``) with a committed turn; heartbeats count the
turns as progress.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import CommandError

if TYPE_CHECKING:
    from .sdk import PackageAgent


def host_definition(
    agent: PackageAgent, definition: Path, *, database_url: str | None = None
) -> Callable[[PackageAgent], Awaitable[None]]:
    """Register ``chat`` on ``agent`` and return the ``main`` to pass to ``agent.run``."""
    from ..node import Node
    from ..store import load_agent_file

    draft = load_agent_file(definition)
    url = database_url or os.environ.get("AGENT_DATABASE_URL")
    if url is None:
        data_dir = Path(os.environ.get("AGENT_DATA_DIR") or tempfile.mkdtemp())
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite+aiosqlite:///{data_dir / (agent.agent_id + '.db')}"
    ready: asyncio.Future[Any] | None = None

    @agent.command("chat")
    async def chat(params: dict[str, Any]) -> dict[str, Any]:
        message = params.get("message")
        if not isinstance(message, str) or not message:
            raise CommandError("bad_params", "params.message: a non-empty string")
        if ready is None or not ready.done():
            raise CommandError("not_ready", "the hosted agent is still starting")
        node = ready.result()
        reply = await node.get_agent(draft.name).process_message(message)
        agent.progress(turns=int(agent.progress_value("turns", 0)) + 1)
        return {"reply": str(reply), "agent": draft.name}

    async def main(agent: PackageAgent) -> None:
        nonlocal ready
        ready = asyncio.get_running_loop().create_future()
        async with Node.open(url, sandbox=False, node=agent.agent_id) as node:
            await node.register_agent(draft)
            ready.set_result(node)
            agent.progress(turns=0, hosted=draft.name)
            await asyncio.Event().wait()

    return main
