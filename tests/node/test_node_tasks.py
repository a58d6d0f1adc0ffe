"""The library's ``Node`` runs the queue's work like ``netsuke serve``: agents take the tasks
whose capabilities they offer, and handlers load by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netsuke.node import Node
from netsuke.routing import TaskQueue, WorkerLoadError

from ..routing.helpers import eventually


async def _done(queue: TaskQueue, task_id: str) -> bool:
    return (await queue.get(task_id)).status == "succeeded"


@pytest.mark.timeout(60)
async def test_a_node_runs_agent_tasks_and_loaded_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node_handlers_19.py").write_text(
        "def shout(task):\n    return task.payload['text'].upper()\n\nshout.kinds = ['shout']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    async with Node.open(url, sandbox=False, workers=["node_handlers_19:shout"]) as node:
        await node.register_agent({"name": "searcher", "capabilities": ["search"]})
        assert node.hosting is not None and node.hosting.agent_workers is not None
        await node.hosting.agent_workers.reconcile()  # (the event does it too, a moment later)
        by_agent = await node.queue.submit("s", {"message": "find it"}, capabilities=["search"])
        by_handler = await node.queue.submit("shout", {"text": "hey"})
        await eventually(lambda: _done(node.queue, by_agent.id), timeout=20)
        await eventually(lambda: _done(node.queue, by_handler.id), timeout=20)
        assert "find it" in (await node.queue.get(by_agent.id)).result
        assert (await node.queue.get(by_handler.id)).result == "HEY"
    sys.modules.pop("node_handlers_19", None)


async def test_a_node_refuses_a_worker_it_cannot_load(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    with pytest.raises(WorkerLoadError, match="no_such_module_19"):
        async with Node.open(url, sandbox=False, workers=["no_such_module_19:fn"]):
            pass
