"""The seed's NATS subjects and message formats (seed 003, "Service Interfaces").

Command (``agent.manager.command``, ``agent.manager.query``, ``agent.{id}.command|query``)::

    {"command": str, "agent_id": str, "params": {...}, "timestamp": iso8601, "id": str?}

Response (the request's reply subject, and ``agent.manager.response`` /
``agent.{id}.response``)::

    {"status": "success"|"error", "command": str, "agent_id": str|None,
     "result": {...}|None, "error": {"code", "message"}|None, "timestamp": iso8601, "id": str?}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._errors import CommandError

AGENT_MANAGER_COMMAND = "agent.manager.command"
AGENT_MANAGER_QUERY = "agent.manager.query"
AGENT_MANAGER_RESPONSE = "agent.manager.response"
AGENT_COMMAND = "agent.{agent_id}.command"
AGENT_QUERY = "agent.{agent_id}.query"
AGENT_RESPONSE = "agent.{agent_id}.response"
AGENT_STATUS = "agent.status"
AGENT_METRICS = "agent.metrics"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Command:
    command: str
    agent_id: str | None
    params: dict[str, Any] = field(default_factory=dict)
    timestamp: str | None = None
    id: str | None = None

    @classmethod
    def parse(cls, data: bytes) -> Command:
        """Decode and validate; raise :class:`CommandError` (``malformed``) naming the field."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandError("malformed", f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CommandError("malformed", "expected a JSON object")
        command = raw.get("command")
        if not isinstance(command, str) or not command:
            raise CommandError("malformed", "command: a non-empty string is required")
        agent_id = raw.get("agent_id")
        if agent_id is not None and not isinstance(agent_id, str):
            raise CommandError("malformed", "agent_id: must be a string")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise CommandError("malformed", "params: must be an object", agent_id=agent_id)
        cid = raw.get("id", raw.get("command_id"))
        if cid is not None and not isinstance(cid, str):
            raise CommandError("malformed", "id: must be a string", agent_id=agent_id)
        ts = raw.get("timestamp")
        return cls(command, agent_id, params, ts if isinstance(ts, str) else None, cid)

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "command": self.command,
            "agent_id": self.agent_id,
            "params": self.params,
            "timestamp": self.timestamp or now_iso(),
        }
        if self.id is not None:
            body["id"] = self.id
        return json.dumps(body).encode()


def response(
    command: str,
    agent_id: str | None,
    *,
    result: dict[str, Any] | None = None,
    error: CommandError | None = None,
    command_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error" if error is not None else "success",
        "command": command,
        "agent_id": agent_id,
        "result": result if error is None else None,
        "error": error.as_dict() if error is not None else None,
        "timestamp": now_iso(),
    }
    if command_id is not None:
        body["id"] = command_id
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, default=str).encode()
