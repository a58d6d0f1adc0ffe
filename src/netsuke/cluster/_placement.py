"""Where a new session starts (issue 17): a placement policy over the live nodes.

Policies:

* ``least-loaded`` (the default): the live node owning the fewest sessions (the store's
  ``conversations`` rows by owner: one ``GROUP BY`` read, no extra protocol), **preferring
  the receiving node** while its count is within ``tolerance`` of the least loaded one: a
  balanced cluster then places a session where its request arrived, with no forwarding hop
  (a forwarded turn costs a NATS round trip and a second event loop; on one machine with
  ``serve --nodes N`` the kernel's ``SO_REUSEPORT`` already spreads connections evenly).
  The tolerance is ``max(tolerance_min, tolerance_ratio * least)``.
* ``rendezvous``: highest random weight (HRW) hashing of the session id over the live nodes'
  names: every node computes the same choice with no coordination, and a node joining or
  leaving moves only the sessions it wins or held.
* ``local``: always the receiving node (the behaviour before placement existed).

``required`` labels (an agent definition's ``node_labels``) restrict the candidates to nodes
carrying all of them (``--label k=v``); none live: ``NoNodeAvailableError``.

Placement only proposes: the store's compare-and-set on the session row decides the owner, so
two nodes that choose differently still end with one session (the loser forwards to the
winner).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter

from netsuke.observability import REGISTRY
from netsuke.store import NotFoundError

if TYPE_CHECKING:
    from netsuke.store import Store

__all__ = [
    "POLICIES",
    "Candidate",
    "NoNodeAvailableError",
    "PlacementPolicy",
    "choose_node",
    "parse_labels",
]

PlacementPolicy = Literal["least-loaded", "rendezvous", "local"]
POLICIES: tuple[str, ...] = ("least-loaded", "rendezvous", "local")

PLACEMENTS = Counter(
    "netsuke_cluster_placements",
    "Placement decisions for new sessions, by policy and result (local, remote).",
    ["policy", "result"],
    registry=REGISTRY,
)


class NoNodeAvailableError(LookupError):
    """No live node carries the labels a session requires."""

    def __init__(self, required: Mapping[str, str]) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(required.items()))
        super().__init__(f"no live node carries the labels {shown}")
        self.required = dict(required)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live node: its id (``name#incarnation``), labels and the sessions it owns."""

    node_id: str
    sessions: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node_id.split("#", 1)[0]


def _hrw(node_name: str, session_id: str) -> int:
    digest = hashlib.blake2b(f"{node_name}\x00{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose_node(
    policy: str,
    session_id: str,
    candidates: Sequence[Candidate],
    me: str,
    *,
    required: Mapping[str, str] | None = None,
    tolerance_min: int = 2,
    tolerance_ratio: float = 0.1,
) -> str:
    """The node id a new session ``session_id`` should start on (see the module doc).
    ``me`` is the receiving node's id; it is a candidate even when absent from
    ``candidates`` (a node that is not in a cluster), unless labels exclude it."""
    if policy not in POLICIES:
        raise ValueError(f"placement policy {policy!r}: one of {', '.join(POLICIES)}")
    pool = list(candidates)
    if not required and not any(c.node_id == me for c in pool):
        pool.append(Candidate(me))
    if required:
        pool = [c for c in pool if all(c.labels.get(k) == v for k, v in required.items())]
        if not pool:
            PLACEMENTS.labels(policy, "none").inc()
            raise NoNodeAvailableError(required)
    here = next((c for c in pool if c.node_id == me), None)
    if policy == "local" and here is not None:
        chosen = me
    elif policy == "rendezvous":
        chosen = max(pool, key=lambda c: (_hrw(c.name, session_id), c.node_id)).node_id
    else:  # least-loaded (also "local" when labels exclude this node)
        least = min(pool, key=lambda c: (c.sessions, _hrw(c.name, session_id)))
        slack = max(tolerance_min, int(tolerance_ratio * least.sessions))
        chosen = (
            me if here is not None and here.sessions <= least.sessions + slack else least.node_id
        )
    PLACEMENTS.labels(policy, "local" if chosen == me else "remote").inc()
    return chosen


def parse_labels(text: str | Sequence[str] | None) -> dict[str, str]:
    """``k=v`` pairs (a comma-separated string, or a list of ``k=v``) as a dict;
    ``ValueError`` naming the bad pair. Keys and values: 1-64 letters, digits, ``_.-``."""
    if not text:
        return {}
    items = text.split(",") if isinstance(text, str) else list(text)
    out: dict[str, str] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        k, sep, v = item.partition("=")
        if not sep or not _ok(k) or not _ok(v):
            raise ValueError(f"node label {item!r}: use key=value (letters, digits, _ . -)")
        out[k] = v
    return out


def _ok(s: str) -> bool:
    return 0 < len(s) <= 64 and all(c.isalnum() or c in "_.-" for c in s) and s.isascii()


async def live_candidates(store: Store) -> list[Candidate]:
    """The live member nodes of ``store``'s cluster as placement candidates: their labels and
    how many sessions each owns (two small reads)."""
    from ._membership import list_nodes

    nodes = await list_nodes(store.database)
    owned = await store.conversations.owner_counts()
    return [
        Candidate(n.node_id, owned.get((n.name, n.incarnation), 0), dict(n.labels)) for n in nodes
    ]


async def required_labels(store: Store, agent: str) -> dict[str, str] | None:
    """The node labels the stored definition ``agent`` requires (``config.node_labels``), if
    any (an agent defined in code only requires none)."""
    try:
        definition = await store.agents.get(agent)
    except NotFoundError:
        return None
    raw: Any = definition.config.get("node_labels")
    if not isinstance(raw, dict) or not raw:
        return None
    return {str(k): str(v) for k, v in raw.items()}
