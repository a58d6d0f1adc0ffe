"""A worker process for the JetStream crash test: takes one task, says so in a file, then hangs.

Usage: ``python crash_worker_jetstream.py NATS_URL PREFIX MONITOR_URL MARKER_FILE``. The test
SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from netsuke.routing import JetStreamTaskBackend, TaskQueue, TaskRecord


def note(marker: Path, text: str) -> None:
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(marker)  # atomic: the test never reads a half-written marker


async def main(url: str, prefix: str, monitor: str, marker: Path) -> None:
    backend = await JetStreamTaskBackend.open(url, prefix=prefix, monitor=monitor)
    queue = TaskQueue(backend)

    async def handle(task: TaskRecord) -> None:
        note(marker, f"{task.id} {task.attempts}")
        await asyncio.sleep(3600)

    async with queue.worker(handle, name="doomed", lease=1.0, poll_interval=0.05):
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
