"""A cluster node as a separate OS process, for the tests: ``python -m tests.cluster.node_main
URL PREFIX NAME``. It starts an ``Echo`` registered as ``echo`` and a ``Recorder`` registered as
``rec``, prints ``<node> <echo id> <rec id>`` on one line, and runs until it is killed."""

from __future__ import annotations

import asyncio
import sys

from netsuke.cluster import join

from .helpers import FAST, Echo, Recorder


async def main(url: str, prefix: str, name: str) -> None:
    async with join(url, name, transport_options={**FAST, "prefix": prefix}) as rt:
        pid = await rt.start(Echo, name="echo")
        rec = await rt.start(Recorder, name="rec")
        assert pid is not None and rec is not None
        print(pid.node, pid.id, rec.id, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
