"""An agent package hosting a Netsuke agent defined as data (definition.yaml, offline model):
the ``chat`` command runs one committed turn."""

from __future__ import annotations

from pathlib import Path

from netsuke.manager.sdk import PackageAgent, host_definition

agent = PackageAgent.from_env()
main = host_definition(agent, Path(__file__).with_name("definition.yaml"))

if __name__ == "__main__":
    agent.run(main)
