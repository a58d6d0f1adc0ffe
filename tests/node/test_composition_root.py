"""One composition root (issue 19): the server's node is a ``netsuke.node.Node`` built by
``Node.open``, and a library node gets what the server's gets (definitions synced from a
folder, loaded workflows by name)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import netsuke.api
from netsuke.api import ServerNode, Settings, open_node
from netsuke.node import Node, WorkflowCatalog
from netsuke.routing import WorkflowRunner
from netsuke.store import NotFoundError

from ..routing.helpers import eventually

pytestmark = pytest.mark.timeout(60)

AGENTS = Path(__file__).resolve().parents[2] / "agents"

MODULE = """
from netsuke.routing import Workflow

flow = Workflow("nightly_root")

@flow.step()
async def one(ctx):
    return 1
"""


@pytest.fixture
def workflows_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "root_flows_19.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "root_flows_19:flow"
    sys.modules.pop("root_flows_19", None)


async def test_the_servers_node_is_a_netsuke_node(tmp_path: Path, workflows_module: str) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        agents_dir=AGENTS,
        workers=[{"handler": workflows_module}],
        shutdown_timeout=7.0,
    )
    async with open_node(settings) as node:
        assert isinstance(node, Node) and isinstance(node, ServerNode)
        assert node.runtime is node.rt and node.rt.node == settings.node
        assert node.rt.shutdown_timeout == 7.0
        assert node.settings is settings
        assert node.bootstrap_secret is not None  # the store had no key
        assert node.synced is not None and "greeter" in node.synced["created"]
        assert await node.store.agents.exists("greeter")
        # the library's API works on the server's node: routing by capability included
        await node.agents.start_defined("greeter")
        assert node.router.route(["greeting"]).meta["agent"] == "greeter"
        # the monitor watches the runtime's bus

        async def seen() -> bool:
            return node.monitor.stats("greeter").starts >= 1

        await eventually(seen)
        assert isinstance(node.workflows, WorkflowCatalog)
        assert "nightly_root" in node.workflows.workflows
        extras = node.extras
        assert extras["tasks"] is node.queue and extras["workflows"] is node.workflows
        assert extras["agents"] is node.agents and extras["monitor"] is node.monitor


async def test_a_library_node_syncs_definitions_and_serves_loaded_workflows(
    tmp_path: Path, workflows_module: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    async with Node.open(url, sandbox=False, agents_dir=AGENTS, workers=[workflows_module]) as node:
        assert node.synced is not None
        assert sorted(node.synced["created"]) == ["greeter", "researcher", "summarizer"]
        assert isinstance(node.workflows.runner, WorkflowRunner)
        run_id = node.workflows.start("nightly_root", {"n": 1})

        async def finished() -> bool:
            try:
                return (await node.store.workflows.get(run_id)).status == "succeeded"
            except NotFoundError:
                return False

        await eventually(finished)
    # a second open finds nothing new to sync
    async with Node.open(url, sandbox=False, agents_dir=AGENTS) as node:
        assert node.synced is not None and node.synced["created"] == []
        assert sorted(node.synced["unchanged"]) == ["greeter", "researcher", "summarizer"]


def test_the_servers_former_node_class_is_a_deprecated_name() -> None:
    with pytest.warns(DeprecationWarning, match="ServerNode"):
        cls = netsuke.api.Node  # type: ignore[attr-defined]
    assert cls is ServerNode
    assert "Node" not in netsuke.api.__all__
