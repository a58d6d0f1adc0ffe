from __future__ import annotations

from typing import Any


def agent(name: str, **fields: Any) -> dict[str, Any]:
    """A valid agent draft as a mapping, with ``fields`` overriding the defaults."""
    data: dict[str, Any] = {
        "name": name,
        "description": f"{name} agent",
        "system_prompt": f"You are {name}.",
        "model": "openai:gpt-4o",
        "model_settings": {"temperature": 0.2, "max_tokens": 512},
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "capabilities": ["search"],
        "tools": ["web_search"],
    }
    data.update(fields)
    return data
