"""Issue 14 item 4: SIGTERM (systemd, Docker, Kubernetes) and SIGINT stop ``netsuke serve``
in order and the process exits 0: the request in flight (a function execution) is answered,
committed data is in the database file itself (the write-ahead log checkpointed), and the
node says it stopped."""

from __future__ import annotations

import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

EXE = str(Path(sys.executable).parent / "netsuke")
SLOW = "import time\n\n\ndef slow():\n    time.sleep(2)\n    return 'done'\n"


def _wait_for(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_stops_in_order_and_exits_zero(sig: signal.Signals, tmp_path: Path) -> None:
    if not (shutil.which("bwrap") or shutil.which("unshare")):
        pytest.skip("no sandbox isolation (bubblewrap or unshare) for the in-flight execution")
    db = tmp_path / "node.db"
    err = tmp_path / "serve.err"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [EXE, "serve", "--port", "0", "--database-url", f"sqlite:///{db}"],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            cwd=tmp_path,
        )
    assert proc.stdout is not None
    try:
        url = key = None
        while url is None or key is None:
            line = proc.stdout.readline()
            assert line, f"serve exited early: {err.read_text()[-2000:]}"
            if m := re.search(r"running at (http://\S+)", line):
                url = m.group(1)
            if m := re.search(r"(nsk_\S+)", line):
                key = m.group(1)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            made = client.post(
                "/api/v1/functions",
                json={"name": "slow", "code": SLOW, "allowed_imports": ["time"]},
            )
            assert made.status_code == 201, made.text
            task = client.post("/api/v1/tasks", json={"kind": "k", "payload": {"n": 1}})
            assert task.status_code == 201
            answers: list[httpx.Response] = []

            def execute() -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as other:
                    answers.append(other.post("/api/v1/functions/slow/execute", json={}))

            runner = threading.Thread(target=execute)
            runner.start()
            # the first execution starts the sandbox: once it logs, the request is in flight
            assert _wait_for(err, "sandbox.started", 30), err.read_text()[-2000:]
            proc.send_signal(sig)
            runner.join(60)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, err.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    assert answers[0].json()["value"] == "done"
    assert "stopping node" in rest and "node stopped" in rest
    assert "Traceback" not in err.read_text()
    # the write-ahead log was checkpointed: the database file alone holds the task
    assert not (tmp_path / "node.db-wal").exists() or (tmp_path / "node.db-wal").stat().st_size == 0
    alone = tmp_path / "copy.db"
    shutil.copyfile(db, alone)
    with sqlite3.connect(alone) as conn:
        found = conn.execute("SELECT id FROM tasks WHERE id = ?", (task.json()["id"],))
        assert found.fetchone() is not None
