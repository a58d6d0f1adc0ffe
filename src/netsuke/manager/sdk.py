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

from ._errors import CommandError
from ._hosted import host_definition
from ._sdk import PackageAgent

__all__ = ["CommandError", "PackageAgent", "host_definition"]
