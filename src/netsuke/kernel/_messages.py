"""Messages the kernel delivers to processes, and the private envelopes of the mailbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ._pid import ExitReason, Pid, Ref

__all__ = ["Down", "Exit", "From"]


@dataclass(frozen=True, slots=True)
class Exit:
    """An exit signal turned into a message, delivered to ``handle_info`` of a process that
    traps exits. ``pid`` is the linked process that exited (``None`` for a signal sent by code
    that is not a process); ``reason`` is its exit reason."""

    pid: Pid | None
    reason: ExitReason


@dataclass(frozen=True, slots=True)
class Down:
    """Delivered to ``handle_info`` when a monitored process exits. ``ref`` is the value that
    ``monitor`` returned; ``reason`` is ``"noproc"`` when the process did not exist. ``pid`` is
    the process's pid, or, for a monitor taken by name, the name form as in OTP: ``(name,
    node)`` for a ``str`` name, the ``Via`` for a ``Via`` (also when the name was not
    registered: no pid is made up)."""

    ref: Ref
    pid: Pid | tuple[Any, str] | Any
    reason: ExitReason


class From:
    """Where the reply of a call goes; passed to ``handle_call`` as ``from_``.

    Return a value from ``handle_call`` to reply at once, or return ``NOREPLY``, keep the
    ``From`` and answer later with ``Process.reply(from_, value)`` (a deferred reply), possibly
    from another message. A caller that timed out or was cancelled ignores the reply.
    """

    __slots__ = ("future", "request")

    def __init__(self, request: Any, future: asyncio.Future[Any]) -> None:
        self.request = request
        self.future = future

    @property
    def answered(self) -> bool:
        """True once a reply was sent, or the caller stopped waiting."""
        return self.future.done()

    def __repr__(self) -> str:
        return f"<From request={self.request!r} answered={self.answered}>"


class Cast:
    __slots__ = ("request",)

    def __init__(self, request: Any) -> None:
        self.request = request


class SysStop:
    """Stop with a reason, calling terminate; the future resolves when the process is gone."""

    __slots__ = ("future", "reason")

    def __init__(self, reason: ExitReason, future: asyncio.Future[Any] | None) -> None:
        self.reason = reason
        self.future = future


class SysParentExit:
    """A trapped exit signal from the parent: terminate with the reason (OTP semantics)."""

    __slots__ = ("reason",)

    def __init__(self, reason: ExitReason) -> None:
        self.reason = reason


class SysContinue:
    __slots__ = ("arg",)

    def __init__(self, arg: Any) -> None:
        self.arg = arg
