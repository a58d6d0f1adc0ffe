"""Agents as data (seed 004): definitions in the database, built and started at run time.

The seed's registry, in async Python::

    registry = AgentRegistry(session)
    agent = registry.register_agent(agent_def)
    response = await registry.process(messages=[...], conversation_id="123")
    agent = registry.get_agent("SearchAgent")
    result = await agent.process_message("Search for...")

Here the registry is a ``Node``: the definition is stored (versioned, validated; the seed's
``config_data`` is mapped onto it), its stored function becomes a sandboxed tool, ``process``
routes by capability and keeps one memory per ``conversation_id``, and every turn is
committed before its reply. The offline model stands in for an LLM: it calls a tool the
message names.
"""

from __future__ import annotations

import asyncio
import tempfile

from netsuke.node import Node

SEARCH_DOCS = """
import re

DOCS = ["Supervisors restart crashed agents.", "The registry finds agents by name."]

async def search_docs(query: str) -> list:
    words = re.findall(r"[a-z]+", query.lower())
    return [doc for doc in DOCS if any(word in doc.lower() for word in words)]
"""


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Node.open(f"sqlite+aiosqlite:///{tmp}/netsuke.db") as registry:
            sandboxed = registry.sandbox is not None and registry.sandbox.isolation is not None
            if sandboxed:
                await registry.functions.store_function(
                    name="search_docs",
                    code=SEARCH_DOCS,
                    description="Search documentation",
                    input_schema={
                        "type": "object",
                        "properties": {"query": {"type": "string"}},
                        "required": ["query"],
                    },
                    output_schema={"type": "array", "items": {"type": "string"}},
                    is_async=True,
                    allowed_imports=["re"],
                )
            else:
                print(f"(no sandbox here: {registry.sandbox and registry.sandbox.refusal})")

            agent_def = {
                "name": "SearchAgent",
                "description": "Handles search queries",
                "system_prompt": "You are a search assistant...",
                "tools": ["search_docs"] if sandboxed else [],
                "config_data": {"capabilities": ["search", "filter"], "temperature": 0.7},
                "max_chain_depth": 3,
            }
            spec = await registry.register_agent(agent_def)
            print(f"registered {spec.name} v{spec.version} with tools {list(spec.tools)}")

            response = await registry.process(
                "search_docs 'supervisors'", capabilities=["search"], conversation_id="123"
            )
            print(f"routed by capability -> {response}")

            agent = registry.get_agent("SearchAgent")
            result = await agent.process_message("Search for the registry")
            print(f"direct -> {result}")

            agent_def["description"] = "Handles search and filter queries"
            spec = await registry.register_agent(agent_def)  # a new version, restarted
            versions = await registry.store.agents.versions("SearchAgent")
            print(f"now v{spec.version}; versions kept: {[v.version for v in versions]}")
            history = await registry.agents.history("SearchAgent")
            print(f"conversation survives the restart: {len(history)} messages")


if __name__ == "__main__":
    asyncio.run(main())
