"""Every example in examples/ runs, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


def test_netsuke_serve_starts_and_stops_cleanly(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "netsuke"
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    proc = subprocess.run(
        [str(exe), "serve", "--port", "0", "--database-url", url, "--run-for", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "running" in proc.stdout and "stopping" in proc.stdout


def test_netsuke_cli_refuses_bad_options_with_one_line() -> None:
    exe = Path(sys.executable).parent / "netsuke"
    proc = subprocess.run(
        [str(exe), "serve", "--log-level", "loud"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("netsuke: error:")


def test_netsuke_db_upgrade_runs_from_the_main_cli(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "netsuke"
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    up = subprocess.run(
        [str(exe), "db", "upgrade", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    current = subprocess.run(
        [str(exe), "db", "current", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "up to date" in current.stdout
    bad = subprocess.run(
        [str(exe), "db", "current", "--url", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("netsuke: error:")
