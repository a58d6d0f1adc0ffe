"""A worker process for the Redis crash test: takes one task, says so in a file, then hangs.

Usage: ``python crash_worker_redis.py REDIS_URL PREFIX MARKER_FILE``. The test SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from netsuke.routing import RedisTaskBackend, TaskQueue, TaskRecord


def note(marker: Path, text: str) -> None:
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(marker)  # atomic: the test never reads a half-written marker


async def main(url: str, prefix: str, marker: Path) -> None:
    queue = TaskQueue(await RedisTaskBackend.open(url, prefix=prefix))

    async def handle(task: TaskRecord) -> None:
        note(marker, f"{task.id} {task.attempts}")
        await asyncio.sleep(3600)

    async with queue.worker(handle, name="doomed", lease=1.0, poll_interval=0.05):
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
