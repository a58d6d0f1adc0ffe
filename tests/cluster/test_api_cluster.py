"""``GET /api/v1/cluster/nodes`` on a real node (uvicorn on 127.0.0.1) that joined a cluster
over a real nats-server, with the API's usual authentication."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsuke.api import Settings
from netsuke.manager.testing import NatsServer

from ..api.conftest import serve
from .helpers import prefix

pytestmark = pytest.mark.timeout(120)


async def test_cluster_nodes_lists_this_member_to_any_valid_key(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
        port=0,
        rate_limit_per_minute=0,
        node="apinode",
        cluster=nats_server.url,
        cluster_prefix=prefix(),
    )
    async with serve(settings) as live:
        assert (await live.client().get("/api/v1/cluster/nodes")).status_code == 401
        user = live.client(await live.key("user"))
        r = await user.get("/api/v1/cluster/nodes")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["clustered"] is True and body["fenced"] is False
        assert body["node"].startswith("apinode#")
        [me] = body["nodes"]
        assert me["node"] == body["node"] and me["live"] is True and me["state"] == "live"
        assert 0 < me["expires_in_s"] <= me["lease_s"] == 5.0
        assert me["this"] is True and me["heard"] is True and me["sessions"] == 0
        assert body["this_node"]["node"] == body["node"]


async def test_a_node_alone_answers_with_no_cluster(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", port=0, rate_limit_per_minute=0
    )
    async with serve(settings) as live:
        r = await live.admin.get("/api/v1/cluster/nodes", params={"all": "true"})
        assert r.status_code == 200
        body = r.json()
        assert {k: body[k] for k in ("node", "clustered", "fenced", "nodes")} == {
            "node": "local",
            "clustered": False,
            "fenced": False,
            "nodes": [],
        }
        assert body["this_node"]["sessions"] == 0 and body["sessions"]["total"] == 0
