"""A worker process for the redelivery figure: takes one task, says so in a file, then hangs
until the benchmark SIGKILLs it.

Usage: ``python _doomed_worker.py QUEUE DATABASE_URL MARKER LEASE``; ``QUEUE`` is ``sql`` (the
store at ``DATABASE_URL``) or a ``redis://`` URL with ``?prefix=`` (``DATABASE_URL`` unused).
"""

from __future__ import annotations

import sys

_HERE = sys.path.pop(0)  # keep benchmarks/queue.py from shadowing the standard library

import asyncio  # noqa: E402
from pathlib import Path  # noqa: E402

from netsuke.routing import RedisTaskBackend, TaskQueue, TaskRecord  # noqa: E402
from netsuke.store import Store  # noqa: E402


def note(marker: Path, text: str) -> None:
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(marker)  # atomic: the benchmark never reads a half-written marker


async def main(queue_url: str, database_url: str, marker: Path, lease: float) -> None:
    async def handle(task: TaskRecord) -> None:
        note(marker, task.id)
        await asyncio.sleep(3600)

    if queue_url == "sql":
        async with Store.open(database_url) as store:
            queue = TaskQueue.sql(store)
            async with queue.worker(handle, name="doomed", lease=lease, poll_interval=0.05):
                await asyncio.sleep(3600)
    else:
        url, _, prefix = queue_url.partition("?prefix=")
        queue = TaskQueue(await RedisTaskBackend.open(url, prefix=prefix))
        async with queue.worker(handle, name="doomed", lease=lease, poll_interval=0.05):
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
