"""An agent package built on the SDK: echoes commands, counts them as progress."""

from __future__ import annotations

from typing import Any

from netsuke.manager.sdk import PackageAgent

agent = PackageAgent.from_env()


@agent.command("echo")
async def echo(params: dict[str, Any]) -> dict[str, Any]:
    agent.progress(processed=int(agent.progress_value("processed", 0)) + 1)
    return {"echo": params}


@agent.command("crash")
async def crash(params: dict[str, Any]) -> dict[str, Any]:
    import os

    os._exit(int(params.get("code", 3)))


@agent.query("count")
async def count(params: dict[str, Any]) -> dict[str, Any]:
    return {"processed": agent.progress_value("processed", 0)}


if __name__ == "__main__":
    agent.run()
