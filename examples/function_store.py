"""Function store (seed 004): store a user function, run it in the sandbox, give it to an agent.

The seed's usage, in async Python::

    store = FunctionStore(session)
    await store.store_function(name="search_docs", code=..., description=..., input_schema=...,
                               output_schema=..., is_async=True)
    result = await store.execute_function("search_docs", {"query": "..."})

Each call runs in its own isolated, single-use worker process (bubblewrap or unshare
namespaces, no network, read-only filesystem, nobody user, rlimits, seccomp).
"""

from __future__ import annotations

import asyncio
import tempfile

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke.sandbox import FunctionStore, Sandbox, SandboxViolationError
from netsuke.store import Store

SEARCH_DOCS = """
import re

DOCS = [
    "Supervisors restart crashed agents.",
    "The registry finds agents by name.",
    "Stored functions run in a sandbox.",
]

async def search_docs(query: str) -> list[str]:
    words = re.findall(r"[a-z]+", query.lower())
    return [doc for doc in DOCS if any(word in doc.lower() for word in words)]
"""

PHONE_HOME = """
import asyncio

async def phone_home():
    reader, writer = await asyncio.open_connection("127.0.0.1", 80)
    return "connected"
"""


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """An offline model: call the tool once, then answer with what it returned."""
    last = messages[-1].parts[-1]
    if last.part_kind == "tool-return":
        return ModelResponse(parts=[TextPart(f"found: {last.content}")])
    return ModelResponse(parts=[ToolCallPart("search_docs", {"query": "sandbox"})])


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            Store.open(f"sqlite+aiosqlite:///{tmp}/netsuke.db") as session,
            Sandbox() as sandbox,
        ):
            store = FunctionStore(session, sandbox)
            await store.store_function(
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
            result = await store.execute_function("search_docs", {"query": "registry"})
            print(f"isolation: {sandbox.isolation}; search_docs('registry') -> {result}")

            # The same function as a tool of a pydantic-ai agent.
            agent = Agent(FunctionModel(scripted_model), tools=[await store.as_tool("search_docs")])
            reply = await agent.run("What runs in a sandbox?")
            print(f"agent: {reply.output}")

            # A function that tries to read the host's files is refused at store time ...
            try:
                await store.store_function(
                    name="steal", code="def steal():\n    return open('/etc/passwd').read()\n"
                )
            except Exception as exc:
                print(f"refused: {exc}")
            # ... and one that tries the network is stopped inside the sandbox.
            await store.store_function(
                name="phone_home",
                code=PHONE_HOME,
                allowed_imports=["asyncio"],
            )
            try:
                await store.execute_function("phone_home", {})
            except SandboxViolationError as exc:
                print(f"stopped: {exc}")
            runs = await session.executions.list(kind="function_call")
            print(f"recorded executions: {[(e.function_name, e.status) for e in runs.items]}")


if __name__ == "__main__":
    asyncio.run(main())
