"""Placement policies (``netsuke.cluster._placement``), node labels in the membership lease
and the agent definitions' ``node_labels`` (issue 17)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from netsuke.cluster import Membership, list_nodes
from netsuke.cluster._placement import (
    Candidate,
    NoNodeAvailableError,
    choose_node,
    parse_labels,
)
from netsuke.store import AgentDraft, Database, Store, ValidationError

NODES = [Candidate("a#1", 10), Candidate("b#1", 4), Candidate("c#1", 5, {"gpu": "a100"})]


def test_least_loaded_prefers_the_receiving_node_within_the_tolerance() -> None:
    assert choose_node("least-loaded", "s", NODES, "c#1") == "c#1"  # 5 <= 4 + 2: no hop
    assert choose_node("least-loaded", "s", NODES, "a#1") == "b#1"  # 10 > 4 + 2: the least
    big = [Candidate("a#1", 120), Candidate("b#1", 100)]
    assert choose_node("least-loaded", "s", big, "a#1") == "b#1"  # tolerance 10 % of 100
    assert choose_node("least-loaded", "s", [Candidate("a#1", 108), *big[1:]], "a#1") == "a#1"


def test_rendezvous_is_the_same_on_every_node_and_spreads_sessions() -> None:
    picks = [choose_node("rendezvous", f"s{i}", NODES, "a#1") for i in range(600)]
    assert picks == [choose_node("rendezvous", f"s{i}", NODES, "b#1") for i in range(600)]
    assert all(150 < n < 250 for n in Counter(picks).values()), Counter(picks)
    # a node leaving moves only the sessions it held
    rest = NODES[:2]
    moved = [
        (p, choose_node("rendezvous", f"s{i}", rest, "a#1"))
        for i, p in enumerate(picks)
        if p != "c#1"
    ]
    assert all(before == after for before, after in moved)


def test_local_and_labels() -> None:
    assert choose_node("local", "s", NODES, "a#1") == "a#1"
    assert choose_node("local", "s", [], "solo#1") == "solo#1"  # not in a cluster
    for policy in ("least-loaded", "rendezvous", "local"):
        assert choose_node(policy, "s", NODES, "a#1", required={"gpu": "a100"}) == "c#1"
    with pytest.raises(NoNodeAvailableError, match="zone=mars"):
        choose_node("least-loaded", "s", NODES, "a#1", required={"zone": "mars"})
    with pytest.raises(ValueError, match="placement policy"):
        choose_node("random", "s", NODES, "a#1")


def test_parse_labels() -> None:
    assert parse_labels("gpu=a100, zone=eu-1") == {"gpu": "a100", "zone": "eu-1"}
    assert parse_labels(["a=b"]) == {"a": "b"}
    assert parse_labels(None) == {}
    for bad in ("gpu", "=x", "a=b c", "a=" + "x" * 65):
        with pytest.raises(ValueError, match="node label"):
            parse_labels(bad)


async def test_labels_are_stored_with_the_lease(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    async with Store.open(url, migrate=True):
        pass
    db = Database(url)
    m = Membership(db, "alpha", lease=5.0, labels={"gpu": "a100"})
    try:
        await m.join()
        (info,) = await list_nodes(db)
        assert info.labels == {"gpu": "a100"}
        assert info.as_dict()["labels"] == {"gpu": "a100"}
    finally:
        await m.leave()
        await db.dispose()


async def test_definitions_validate_node_labels(tmp_path: Path) -> None:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", migrate=True) as store:
        ok = AgentDraft(name="pinned", model="offline", config={"node_labels": {"gpu": "a100"}})
        await store.agents.create(ok)
        for bad in ({"gpu": 1}, ["gpu"], {"a b": "c"}):
            draft = AgentDraft(name="bad", model="offline", config={"node_labels": bad})
            with pytest.raises(ValidationError) as e:
                await store.agents.create(draft)
            assert e.value.field == "config.node_labels"
