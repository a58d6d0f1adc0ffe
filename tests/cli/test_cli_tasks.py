"""``netsuke tasks submit|ls|get|dlq`` against a real ``netsuke serve`` subprocess."""

from __future__ import annotations

import json

from .conftest import Server


def test_submit_ls_get_dlq(server: Server) -> None:
    submitted = server.run_process(
        "tasks", "submit", "summarise", "--payload", '{"url": "https://example.com"}',
        "--capability", "summarise", "--priority", "3", "--idempotency-key", "u1",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.split(":")[0]
    assert submitted.stdout.strip() == f"{task_id}: queued"
    again = server.run("tasks", "submit", "summarise", "--idempotency-key", "u1")
    assert again.stdout.strip() == f"{task_id}: already submitted"
    listed = json.loads(server.run("tasks", "ls", "--json", "--status", "queued").stdout)
    assert [t["id"] for t in listed] == [task_id] and listed[0]["priority"] == 3
    got = json.loads(server.run("tasks", "get", task_id).stdout)
    assert got["payload"] == {"url": "https://example.com"}
    assert "summarise" in server.run("tasks", "ls").stdout
    assert json.loads(server.run("tasks", "dlq", "--json").stdout) == []
    assert server.run("tasks", "dlq", "--purge").stdout.strip() == "purged 0 dead task(s)"
    missing = server.run("tasks", "dlq", "--requeue", task_id)
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = server.run("tasks", "submit", "x", "--payload", "[]")
    assert bad.returncode == 2 and "JSON object" in bad.stderr
    refused = server.run("tasks", "submit", "x", "--capability", "has space")
    assert refused.returncode == 1 and "422" in refused.stderr
