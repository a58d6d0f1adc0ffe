"""A cluster member as a separate OS process, for the tests: ``python -m
tests.cluster.member_main NATS_URL PREFIX NAME DB_URL LEASE``. It joins with a membership lease
in the store and prints ``<node> <id>`` of its controller process on one line, then runs until
it is killed (or stops when asked). The controller answers calls (over NATS, from the test):

* ``("race", name, n)``: start ``n`` processes and register each as ``name`` at once; returns
  ``[winner pids]`` (those whose registration succeeded);
* ``("own", name)``: start a process and register it as ``name``; returns its pid;
* ``("whereis", name)``: the global name's pid or ``None``;
* ``"status"``: ``{"fenced": ..., "owned": [...], "reason": ...}`` (asks ``fenced`` first,
  as any owner action does).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from netsuke.cluster import GlobalNames, join_cluster
from netsuke.kernel import NOREPLY, AlreadyStartedError, From, Process

from .helpers import FAST, Echo

NAMES: GlobalNames | None = None


class Controller(Process):
    async def handle_call(self, request: Any, from_: From) -> Any:
        names = NAMES
        assert names is not None
        if request == "status":
            fenced = names.membership.fenced
            return {
                "fenced": fenced,
                "owned": names.owned(),
                "reason": names.membership.fence_reason,
                "owns_leader": names.owns("leader"),
            }
        kind = request[0]
        if kind == "whereis":
            return await names.whereis(request[1])
        if kind == "own":
            pid = await self.runtime.start(Echo)
            await names.register(request[1], pid)
            return pid
        if kind == "race":
            _, name, n = request
            pids = [await self.runtime.start(Echo) for _ in range(n)]

            async def one(pid: Any) -> Any:
                try:
                    await names.register(name, pid)
                except AlreadyStartedError:
                    return None
                return pid

            got = await asyncio.gather(*(one(p) for p in pids))
            return [p for p in got if p is not None]
        return NOREPLY


async def main(url: str, prefix: str, name: str, db_url: str, lease: str) -> None:
    global NAMES
    lease_s = float(lease)
    async with join_cluster(
        url,
        name,
        db_url,
        lease=lease_s,
        membership_options={"renew_interval": lease_s / 10, "fence_after": lease_s * 0.5},
        transport_options={**FAST, "prefix": prefix},
    ) as node:
        NAMES = node.names
        pid = await node.runtime.start(Controller, name="ctl")
        assert pid is not None
        print(pid.node, pid.id, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
