"""A client of the AgentManager over NATS, as the seed's Management API uses it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ._protocol import AGENT_MANAGER_COMMAND, AGENT_MANAGER_QUERY, Command, now_iso

#: Environment variable naming the NATS server through which ``netsuke serve``'s API reaches
#: an AgentManager (``/api/v1/manager/agents/...``).
MANAGER_NATS_ENV = "NETSUKE_MANAGER_NATS_URL"


class ManagerUnavailableError(Exception):
    """No manager answered on NATS (not running, or NATS unreachable)."""


class ManagerClient:
    """Sends the seed's commands and returns the seed's responses (dicts)."""

    def __init__(self, nats_url: str, *, timeout: float = 30.0) -> None:
        self.nats_url = nats_url
        self.timeout = timeout
        self._nc: Any = None
        self._lock = asyncio.Lock()

    async def _client(self) -> Any:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                import nats

                try:
                    self._nc = await nats.connect(
                        self.nats_url,
                        name="netsuke-api",
                        max_reconnect_attempts=2,
                        connect_timeout=2,
                    )
                except Exception as exc:
                    raise ManagerUnavailableError(f"NATS at {self.nats_url}: {exc}") from None
            return self._nc

    async def request(
        self,
        command: str,
        agent_id: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        query: bool = False,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        nc = await self._client()
        cmd = Command(command, agent_id, params or {}, now_iso(), command_id)
        subject = AGENT_MANAGER_QUERY if query else AGENT_MANAGER_COMMAND
        try:
            msg = await nc.request(subject, cmd.encode(), timeout=self.timeout)
        except Exception as exc:
            raise ManagerUnavailableError(f"no answer from the manager: {exc}") from None
        body: dict[str, Any] = json.loads(msg.data)
        return body

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
