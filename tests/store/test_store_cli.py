from __future__ import annotations

import asyncio

from sqlalchemy import text
from typer.testing import CliRunner

from netsuke.store import Database, current_revision, head_revision
from netsuke.store.cli import app


def _bump_to_future(url: str) -> None:
    async def bump() -> None:
        db = Database(url)
        try:
            async with db.write() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = 'zz_future'"))
        finally:
            await db.dispose()

    asyncio.run(bump())


def test_db_commands_upgrade_show_and_downgrade(db_url: str) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["current", "--url", db_url])
    assert shown.exit_code == 0, shown.output
    assert "none (empty)" in shown.output
    upgraded = runner.invoke(app, ["upgrade", "--url", db_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert head_revision() in upgraded.output
    assert "up to date" in runner.invoke(app, ["current", "--url", db_url]).output
    down = runner.invoke(app, ["downgrade", "0001_definitions", "--url", db_url])
    assert down.exit_code == 0, down.output
    assert asyncio.run(current_revision(db_url)) == "0001_definitions"
    bad = runner.invoke(app, ["downgrade", "nope", "--url", db_url])
    assert bad.exit_code == 2
    _bump_to_future(db_url)
    refused = runner.invoke(app, ["upgrade", "--url", db_url])
    assert refused.exit_code == 3
    assert "newer" in refused.output


def test_a_bad_url_is_refused() -> None:
    result = CliRunner().invoke(app, ["current", "--url", "mysql://host/x"])
    assert result.exit_code == 2
    assert "unsupported database" in result.output
