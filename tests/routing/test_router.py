"""Capability routing over registry entries (plain kernel processes with capability metadata)."""

from __future__ import annotations

from typing import Any

import pytest

from netsuke.kernel import Process, Runtime
from netsuke.routing import CapabilityRouter, NoRouteError


class Agent(Process):
    """A stand-in agent server: registers with capability metadata and exposes ``load``."""

    def init(self, arg: tuple[str, list[str], int]) -> None:
        name, caps, load = arg
        self.load = load
        self.runtime.registry.register(
            name, self.pid, {"kind": "agent", "agent": name, "capabilities": caps}
        )

    def handle_call(self, request: Any, from_: Any) -> Any:
        self.load = request
        return request


async def start(rt: Runtime, name: str, caps: list[str], load: int = 0) -> Any:
    return await rt.start(Agent, (name, caps, load))


async def test_routes_to_the_least_loaded_agent_offering_all_capabilities() -> None:
    async with Runtime() as rt:
        await start(rt, "search-1", ["search", "filter"], load=3)
        s2 = await start(rt, "search-2", ["search", "filter", "rank"], load=1)
        await start(rt, "writer", ["write"], load=0)
        await rt.start(Process, None, name="not-an-agent")
        router = CapabilityRouter(rt.registry)
        assert router.route(["search", "filter"]).key == "search-2"
        assert router.route(["rank"]).pid == s2
        assert [e.key for e in router.candidates(["search"])] == ["search-2", "search-1"]
        await rt.call(s2, 5)  # search-2 gets busy
        assert router.route(["search"]).key == "search-1"
        assert {e.key for e in router.candidates()} == {"search-1", "search-2", "writer"}


async def test_no_match_raises_no_route_error_with_the_capabilities() -> None:
    async with Runtime() as rt:
        await start(rt, "writer", ["write"])
        router = CapabilityRouter(rt.registry)
        with pytest.raises(NoRouteError) as ei:
            router.route(["write", "translate"])
        assert ei.value.capabilities == ("translate", "write")


async def test_no_match_goes_to_the_configured_fallback_agent() -> None:
    async with Runtime() as rt:
        general = await start(rt, "general", ["chat"])
        await start(rt, "writer", ["write"])
        router = CapabilityRouter(rt.registry, fallback="general")
        entry = router.route(["translate"])
        assert entry.key == "general" and entry.pid == general
        assert router.route(["write"]).key == "writer"
        rt.kill(general)
        with pytest.raises(NoRouteError):
            router.route(["translate"])


async def test_dead_and_changed_agents_are_never_returned_from_a_stale_index() -> None:
    async with Runtime() as rt:
        a = await start(rt, "a", ["x"], load=0)
        b = await start(rt, "b", ["x"], load=5)
        router = CapabilityRouter(rt.registry, refresh=3600)
        assert router.route(["x"]).key == "a"
        rt.kill(a)
        c = await start(rt, "c", ["y"])  # same registry size as before the kill
        assert router.route(["x"]).pid == b
        rt.registry.update_meta("b", b, {"kind": "agent", "agent": "b", "capabilities": ["z"]})
        with pytest.raises(NoRouteError):
            router.route(["x"])
        assert router.route(["y"]).pid == c


async def test_equal_loads_are_shared_round_robin_and_load_function_is_pluggable() -> None:
    async with Runtime() as rt:
        for i in range(3):
            await start(rt, f"w{i}", ["work"])
        router = CapabilityRouter(rt.registry)
        assert {router.route(["work"]).key for _ in range(3)} == {"w0", "w1", "w2"}
        custom = CapabilityRouter(rt.registry, load=lambda e: -int(e.key[1:]))
        assert custom.route(["work"]).key == "w2"
