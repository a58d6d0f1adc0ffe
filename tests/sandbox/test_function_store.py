"""The function store: versions, rollback, delete, schemas, execution records, events,
metrics, tools, concurrency and worker recycling."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from netsuke.events import EventBus, topics
from netsuke.observability import render_metrics
from netsuke.sandbox import (
    ExecutionTimeoutError,
    FunctionRaisedError,
    FunctionStore,
    FunctionValidationError,
    InvalidArgumentsError,
    InvalidResultError,
    IsolationUnavailableError,
    Sandbox,
    SandboxConfig,
)
from netsuke.store import NotFoundError, Store

ADD = "def add(a: int, b: int = 0) -> int:\n    return a + b\n"
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a"],
}
SEARCH = """
import asyncio
import json

async def search_docs(query: str) -> list[str]:
    await asyncio.sleep(0)
    return [json.dumps({"q": query})]
"""


async def test_seed_usage_stores_and_executes_an_async_function(functions: FunctionStore) -> None:
    stored = await functions.store_function(
        name="search_docs",
        code=SEARCH,
        description="Search documentation",
        input_schema={
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
        output_schema={"type": "array", "items": {"type": "string"}},
        is_async=True,
        allowed_imports=["asyncio", "json"],
    )
    assert stored.version == 1 and stored.is_async
    assert stored.sha256 == hashlib.sha256(SEARCH.encode()).hexdigest()
    result = await functions.execute_function("search_docs", {"query": "otp"})
    assert result == ['{"q": "otp"}']


async def test_identical_code_makes_no_new_version_and_rollback_and_delete(
    functions: FunctionStore,
) -> None:
    v1 = await functions.store_function(name="add", code=ADD, input_schema=ADD_SCHEMA)
    again = await functions.store_function(name="add", code=ADD, input_schema=ADD_SCHEMA)
    assert again.version == v1.version == 1
    v2 = await functions.store_function(
        name="add", code=ADD.replace("a + b", "a + b + 100"), input_schema=ADD_SCHEMA
    )
    assert v2.version == 2 and v2.sha256 != v1.sha256
    assert await functions.execute_function("add", {"a": 1}) == 101
    assert await functions.execute_function("add", {"a": 1}, version=1) == 1
    back = await functions.rollback("add", 1, actor="ops")
    assert back.version == 3 and back.sha256 == v1.sha256
    assert await functions.execute_function("add", {"a": 1}) == 1
    assert [v.version for v in await functions.versions("add")] == [1, 2, 3]
    await functions.delete("add", actor="ops")
    with pytest.raises(NotFoundError):
        await functions.execute_function("add", {"a": 1})
    with pytest.raises(NotFoundError):
        await functions.rollback("add", 1)


async def test_every_execution_is_recorded_with_version_hash_duration_status_and_error(
    functions: FunctionStore, store: Store
) -> None:
    stored = await functions.store_function(name="add", code=ADD, input_schema=ADD_SCHEMA)
    result = await functions.execute("add", {"a": 2, "b": 3})
    assert result.value == 5
    ok = await store.executions.get(result.execution_id)
    assert ok.kind == "function_call" and ok.status == "succeeded"
    assert ok.function_name == "add"
    assert ok.details["version"] == 1 and ok.details["sha256"] == stored.sha256
    assert ok.details["isolation"] in {"bubblewrap", "unshare"}
    assert ok.duration_ms is not None and ok.duration_ms > 0
    with pytest.raises(InvalidArgumentsError) as bad:
        await functions.execute_function("add", {"a": "two"})
    assert bad.value.path == "$.a"
    await functions.store_function(name="boom", code="def boom():\n    raise ValueError('no')\n")
    with pytest.raises(FunctionRaisedError) as raised:
        await functions.execute_function("boom", {})
    failed = await store.executions.get(raised.value.execution_id or "")
    assert failed.status == "failed" and failed.details["outcome"] == "error"
    assert failed.error is not None and "ValueError: no" in failed.error
    page = await store.executions.list(kind="function_call")
    outcomes = sorted(e.details["outcome"] for e in page.items)
    assert outcomes == ["error", "invalid_arguments", "succeeded"]


async def test_output_is_validated_against_the_output_schema(functions: FunctionStore) -> None:
    await functions.store_function(
        name="half",
        code="def half(x):\n    return x / 2\n",
        output_schema={"type": "integer"},
    )
    with pytest.raises(InvalidResultError):
        await functions.execute_function("half", {"x": 3})
    await functions.store_function(name="obj", code="def obj():\n    return object()\n")
    with pytest.raises(InvalidResultError):
        await functions.execute_function("obj", {})


async def test_events_metrics_and_traceback_of_user_frames_only(
    store: Store, sandbox: Sandbox
) -> None:
    bus = EventBus()
    sub = bus.subscribe("function.*")
    functions = FunctionStore(store, sandbox, events=bus)
    await functions.store_function(
        name="deep", code="def inner():\n    raise KeyError('k')\n\ndef deep():\n    inner()\n"
    )
    with pytest.raises(FunctionRaisedError) as info:
        await functions.execute_function("deep", {})
    assert info.value.exc_type == "KeyError"
    assert info.value.traceback.count("<netsuke-function>") == 2
    assert "_worker" not in info.value.traceback and "site-packages" not in info.value.traceback
    event = await asyncio.wait_for(sub.get(), 1)
    assert event.topic == topics.FUNCTION_EXECUTED
    assert event.data["function"] == "deep" and event.data["status"] == "error"
    assert event.data["version"] == 1 and len(event.data["sha256"]) == 64
    text = render_metrics().decode()
    assert 'netsuke_sandbox_executions_total{status="error"}' in text
    assert "netsuke_sandbox_execution_seconds_bucket" in text
    await bus.aclose()


async def test_wall_clock_limit_kills_the_whole_process_group(sandbox: Sandbox) -> None:
    code = "import time\n\ndef slow():\n    time.sleep(30)\n"
    started = asyncio.get_running_loop().time()
    with pytest.raises(ExecutionTimeoutError) as info:
        await sandbox.run(code, "slow", {}, is_async=False, timeout_s=0.3, allowed_imports=["time"])
    assert info.value.kind == "wall"
    assert asyncio.get_running_loop().time() - started < 3


async def test_many_executions_at_once_each_in_its_own_process(sandbox: Sandbox) -> None:
    code = "def square(x):\n    return x * x\n"
    results = await asyncio.gather(
        *(sandbox.run(code, "square", {"x": i}, is_async=False) for i in range(24))
    )
    assert [r.value for r in results] == [i * i for i in range(24)]
    pids = [r.worker_pid for r in results]
    assert len(set(pids)) == len(pids)  # never reused


async def test_a_worker_is_never_reused_and_is_gone_after_its_call(sandbox: Sandbox) -> None:
    code = "def one():\n    return 1\n"
    seen: list[int] = []
    for _ in range(5):
        result = await sandbox.run(code, "one", {}, is_async=False)
        assert result.worker_pid is not None and result.worker_pid not in seen
        seen.append(result.worker_pid)
    await asyncio.sleep(0.2)
    assert not any(_is_live_worker(pid) for pid in seen)


def _is_live_worker(pid: int) -> bool:
    """Whether ``pid`` is still one of our worker processes (a reused pid is someone else)."""
    try:
        return b"result_fd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


async def test_deny_by_default_without_isolation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no unshare
    async with Sandbox(SandboxConfig(pool_size=1)) as sandbox:
        assert sandbox.isolation is None
        assert sandbox.refusal is not None and "bwrap" in sandbox.refusal
        with pytest.raises(IsolationUnavailableError) as info:
            await sandbox.run(ADD, "add", {"a": 1}, is_async=False)
        assert "unshare" in info.value.reason
    async with Sandbox(SandboxConfig(pool_size=1, isolation="none")) as sandbox:
        assert sandbox.isolation == "none"
        result = await sandbox.run(ADD, "add", {"a": 1, "b": 2}, is_async=False)
        assert result.value == 3 and result.seccomp


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare not installed")
async def test_unshare_isolation_runs_calls_without_network_or_host_files(
    tmp_path: Path,
) -> None:
    async with Sandbox(SandboxConfig(pool_size=1, isolation="unshare",
                                     allowed_imports=frozenset({"os"}))) as sandbox:  # fmt: skip
        if sandbox.isolation is None:
            pytest.skip(f"unshare does not work here: {sandbox.refusal}")
        code = (
            "import os\n\ndef look():\n"
            "    return [os.getuid(), sorted(os.listdir('/etc')), os.access(TARGET, os.F_OK)]\n"
        ).replace("TARGET", repr(str(tmp_path)))
        result = await sandbox.run(code, "look", {}, is_async=False, allowed_imports=["os"])
        uid, etc, visible = result.value
        assert etc == [] and visible is False
        assert uid == (65534 if os.getuid() == 0 else 0)


async def test_a_stored_function_is_a_pydantic_ai_tool(functions: FunctionStore) -> None:
    await functions.store_function(
        name="add", code=ADD, description="Add two numbers", input_schema=ADD_SCHEMA
    )
    await functions.store_function(name="boom", code="def boom():\n    raise ValueError('no')\n")
    add_tool = await functions.as_tool("add")
    assert add_tool.name == "add" and add_tool.description == "Add two numbers"
    assert add_tool.function_schema.json_schema == ADD_SCHEMA
    calls: list[Any] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            p for m in messages for p in m.parts if p.part_kind in {"tool-return", "retry-prompt"}
        ]
        calls.append([getattr(p, "outcome", "retried") for p in returns])
        if len(returns) == 0:
            return ModelResponse(parts=[ToolCallPart("add", {"a": "x"})])  # bad args: a retry
        if len(returns) == 1:
            return ModelResponse(parts=[ToolCallPart("add", {"a": 40, "b": 2})])
        if len(returns) == 2:
            return ModelResponse(parts=[ToolCallPart("boom", {})])
        return ModelResponse(
            parts=[TextPart(" | ".join(str(getattr(p, "content", "")) for p in returns))]
        )

    agent = Agent(FunctionModel(model), tools=[add_tool, await functions.as_tool("boom")])
    reply = await agent.run("add please")
    assert calls[1] == ["retried"]  # a ModelRetry: the model is asked to fix its arguments
    assert "42" in reply.output
    assert "ValueError" in reply.output and "'type': 'error'" in reply.output


async def test_store_time_refusals_carry_field_line_and_column(functions: FunctionStore) -> None:
    with pytest.raises(FunctionValidationError) as info:
        await functions.store_function(name="add", code="def add(a):\n    return a.__class__\n")
    assert (info.value.field, info.value.line, info.value.column) == ("code", 2, 12)
    with pytest.raises(FunctionValidationError) as info:
        await functions.store_function(
            name="add",
            code=ADD,
            input_schema={"type": "object", "properties": {"a": {}}, "required": ["a"]},
        )
    assert info.value.field == "input_schema" and info.value.line == 1
    with pytest.raises(FunctionValidationError) as info:
        await functions.store_function(name="add", code=ADD, allowed_imports=["os"])
    assert info.value.field == "allowed_imports[0]"
    with pytest.raises(FunctionValidationError) as info:
        await functions.store_function(name="add", code=ADD, is_async=True)
    with pytest.raises(FunctionValidationError) as info:
        await functions.store_function(name="add", code=ADD, timeout_s=0)
    assert info.value.field == "limits.timeout_s"
    with pytest.raises(NotFoundError):
        await functions.get("add")


async def test_the_fork_server_is_used_and_comes_back_after_it_dies(tmp_path: Path) -> None:
    async with Sandbox(SandboxConfig(pool_size=1)) as sandbox:
        if sandbox.spawn != "fork":
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true: the fork server must work here: {sandbox.refusal}")
            pytest.skip(f"the fork server does not work here: {sandbox.refusal}")
        assert (await sandbox.run(ADD, "add", {"a": 1}, is_async=False)).value == 1
        server = sandbox._server
        assert server is not None and server._proc is not None
        os.killpg(server._proc.pid, 9)
        await server._proc.wait()
        results = [await sandbox.run(ADD, "add", {"a": i}, is_async=False) for i in range(3)]
        assert [r.value for r in results] == [0, 1, 2]
        assert server.alive


async def test_a_cancelled_call_leaves_no_worker_behind(sandbox: Sandbox) -> None:
    pool = sandbox._pool
    assert pool is not None
    await _settled(pool)
    before = len(_worker_pids())
    assert before >= 1  # the pool's idle workers are seen (so a leftover would be too)
    code = "import time\n\ndef slow():\n    time.sleep(30)\n"
    task = asyncio.create_task(
        sandbox.run(code, "slow", {}, is_async=False, timeout_s=30, allowed_imports=["time"])
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await sandbox.run(ADD, "add", {"a": 2}, is_async=False)).value == 2
    await _settled(pool)
    for _ in range(200):  # the reaper's kill lands
        if len(_worker_pids()) == before:
            break
        await asyncio.sleep(0.05)
    assert len(_worker_pids()) == before


async def _settled(pool: Any) -> None:
    for _ in range(500):
        if pool.idle >= pool.size and not pool._starting:
            return
        await asyncio.sleep(0.01)


def _worker_pids() -> list[int]:
    """This test process's sandbox workers (descendants only: other processes on the machine
    may run sandboxes of their own)."""
    parents: dict[int, int] = {}
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                if b"result_fd" in (entry / "cmdline").read_bytes():
                    workers.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    me = os.getpid()

    def mine(pid: int) -> bool:
        for _ in range(64):
            pid = parents.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid in workers if mine(pid)]
