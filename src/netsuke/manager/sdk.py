"""The agent side: what a package's program uses to be a well-behaved managed agent.

::

    from netsuke.manager.sdk import PackageAgent

    agent = PackageAgent.from_env()  # AGENT_ID, AGENT_TYPE, AGENT_NAME, AGENT_VERSION, NATS_URL

    @agent.command("echo")
    async def echo(params: dict) -> dict:
        agent.progress(processed=agent.progress_value("processed", 0) + 1)
        return {"echo": params}

    agent.run()                              # until SIGTERM or the "stop" command

Heartbeats go to ``agent.status`` every ``AGENT_HEARTBEAT_INTERVAL`` seconds (set by the
manager to a third of the heartbeat timeout) and carry ``progress``, so a watcher sees work
advancing, not only a live process. Metrics go to ``agent.metrics``. Commands and queries
arrive on ``agent.{id}.command`` / ``agent.{id}.query`` in the seed's format and are answered
in the seed's response format, on the reply subject and on ``agent.{id}.response``.
Built in: commands ``stop`` and ``ping``; queries ``status``, ``metrics``, ``progress``.
"""

import typing

from ._errors import CommandError
from ._sdk import PackageAgent

if typing.TYPE_CHECKING:
    from ._hosted import host_definition

__all__ = ["CommandError", "PackageAgent", "host_definition"]


def __getattr__(name: str) -> typing.Any:
    # ``host_definition`` is loaded on first use: most package programs never host a node.
    if name != "host_definition":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ._hosted import host_definition

    globals()[name] = host_definition
    return host_definition


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
