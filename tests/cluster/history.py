"""A history checker for the cluster's safety claims (issue 17).

A test (or a chaos run) records, for each request it sent, whether the caller was acknowledged
(``Request``), and afterwards reads the turns that are committed in the store
(``CommittedTurn``, in commit order: message position). ``check`` counts

* ``acknowledged_lost``: acknowledged requests with no committed turn;
* ``committed_twice``: requests with more than one committed turn (each extra one counts);
* ``stale_epoch``: committed turns whose ownership epoch is older than the newest epoch
  already claimed when they committed: older than an earlier committed turn's epoch, or
  committed after a claim (``Claim``) of a newer epoch took effect;
* ``failed_but_committed``: requests whose caller was told the turn failed, yet found
  committed;
* ``wrong_reply``: acknowledged requests whose reply differs from the committed one (when
  both are known).

``committed_from_history`` reads the committed turns of a session from the store: every
user prompt is one turn, the request id being what ``request_of`` extracts from the prompt;
the epoch comes from the stored request ids (``turn_requests``) when there are any.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelRequest, UserPromptPart

from netsuke.store import Store

__all__ = [
    "Claim",
    "CommittedTurn",
    "Report",
    "Request",
    "check",
    "committed_from_history",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as its caller saw it: ``acknowledged`` (told it committed), ``failed``
    (told it did not), or neither (no answer: unknown); ``reply`` as acknowledged."""

    request_id: str
    acknowledged: bool
    failed: bool = False
    reply: Any = None


@dataclass(frozen=True, slots=True)
class CommittedTurn:
    """A turn found committed: its request id, its first message position (the commit
    order) and the epoch it committed at (``None``: unknown)."""

    request_id: str
    seq: int
    epoch: int | None = None
    reply: Any = None


@dataclass(frozen=True, slots=True)
class Claim:
    """Epoch ``epoch`` was claimed when the conversation held ``at_seq`` messages: a turn
    committed at a position ``>= at_seq`` with an older epoch is a stale-epoch commit."""

    epoch: int
    at_seq: int


@dataclass(slots=True)
class Report:
    acknowledged_lost: int = 0
    committed_twice: int = 0
    stale_epoch: int = 0
    failed_but_committed: int = 0
    wrong_reply: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def counts(self) -> tuple[int, int, int]:
        """``(acknowledged lost, committed twice, stale-epoch commits)``."""
        return (self.acknowledged_lost, self.committed_twice, self.stale_epoch)

    @property
    def ok(self) -> bool:
        return not (
            self.acknowledged_lost
            or self.committed_twice
            or self.stale_epoch
            or self.failed_but_committed
            or self.wrong_reply
        )


def check(
    requests: Iterable[Request],
    committed: Iterable[CommittedTurn],
    claims: Iterable[Claim] = (),
) -> Report:
    """Count the violations of the history (see the module documentation)."""
    report = Report()
    turns = sorted(committed, key=lambda t: t.seq)
    times = Counter(t.request_id for t in turns)
    by_id = {t.request_id: t for t in turns}
    for rid, n in sorted(times.items()):
        if n > 1:
            report.committed_twice += n - 1
            report.details.append(f"{rid}: committed {n} times")
    for r in requests:
        found = by_id.get(r.request_id)
        if r.acknowledged and found is None:
            report.acknowledged_lost += 1
            report.details.append(f"{r.request_id}: acknowledged, not committed")
        if r.failed and found is not None:
            report.failed_but_committed += 1
            report.details.append(f"{r.request_id}: told it failed, found committed")
        if (
            r.acknowledged
            and found is not None
            and r.reply is not None
            and found.reply is not None
            and r.reply != found.reply
        ):
            report.wrong_reply += 1
            report.details.append(f"{r.request_id}: acknowledged reply differs from the stored")
    sorted_claims = sorted(claims, key=lambda c: c.at_seq)
    newest = 0
    for t in turns:
        if t.epoch is None:
            continue
        claimed = max((c.epoch for c in sorted_claims if c.at_seq <= t.seq), default=0)
        if t.epoch < max(newest, claimed):
            report.stale_epoch += 1
            report.details.append(
                f"{t.request_id}: committed at epoch {t.epoch} after epoch {max(newest, claimed)}"
            )
        newest = max(newest, t.epoch)
    return report


def _prompt_text(message: Any) -> str | None:
    if not isinstance(message, ModelRequest):
        return None
    for part in message.parts:
        if isinstance(part, UserPromptPart):
            return str(part.content)
    return None


async def committed_from_history(
    store: Store, session_id: str, request_of: Callable[[str], str | None]
) -> list[CommittedTurn]:
    """The committed turns of ``session_id``: one per stored user prompt naming a request id
    (``request_of(prompt)``), with its epoch and reply from ``turn_requests`` when stored."""
    history = await store.conversations.history(session_id)
    stored = {r.first_seq: r for r in await store.conversations.requests(session_id)}
    out: list[CommittedTurn] = []
    for seq, message in enumerate(history):
        text = _prompt_text(message)
        rid = request_of(text) if text is not None else None
        if rid is None:
            continue
        req = stored.get(seq)
        out.append(
            CommittedTurn(
                rid,
                seq,
                None if req is None else req.epoch,
                None if req is None else req.reply,
            )
        )
    return out
