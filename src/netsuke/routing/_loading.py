"""Handler workers and workflows loaded by name (``module:attribute``) into a node or a
``netsuke worker`` process.

A ``WorkerSpec`` names a target, ``"package.module:name"``, importable from the process's
``sys.path`` (the working directory included). The target is either

* a ``Workflow``: the node serves it (``GET /api/v1/workflows`` lists it); or
* a callable: a task handler (``handler(task)``, sync or async) run by a ``Worker`` offering
  ``capabilities`` and narrowed to ``kinds``. Each defaults to the spec's value, else to the
  attribute of the same name on the callable (``fn.capabilities = ["summarise"]``), else to
  ``None`` (any). A handler offering neither capabilities nor kinds takes **every** task,
  agents' too: give it one of the two.

``fallback`` (``module:name``) is the worker's fallback after a task's last attempt.
A target that cannot be imported, or is neither, is a ``WorkerLoadError`` naming the spec.
"""

from __future__ import annotations

import importlib
import re
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ._observe import log
from ._queue import TaskQueue
from ._worker import Worker
from ._workflow import Workflow

__all__ = ["LoadedWorkers", "WorkerLoadError", "WorkerSpec", "load_object", "load_workers"]

_TARGET = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"


class WorkerLoadError(ValueError):
    """A worker spec that cannot be loaded; ``target`` names it."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"worker {target!r}: {reason}")


class WorkerSpec(BaseModel):
    """One ``[[workers]]`` entry of the settings file (``--worker module:name`` sets only
    ``handler``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    handler: str = Field(pattern=_TARGET)
    capabilities: list[str] | None = None
    kinds: list[str] | None = None
    concurrency: int = Field(default=1, ge=1, le=1024)
    lease: float = Field(default=30.0, gt=0, le=86400)
    fallback: str | None = Field(default=None, pattern=_TARGET)

    @classmethod
    def parse(cls, text: str) -> WorkerSpec:
        """``module:name`` as given on the command line; ``WorkerLoadError`` when malformed."""
        if not re.match(_TARGET, text):
            raise WorkerLoadError(text, "expected module:name (e.g. myapp.tasks:summarise)")
        return cls(handler=text)


def load_object(target: str) -> Any:
    """Import ``module:attr.path``; ``WorkerLoadError`` when it fails."""
    module_name, _, attr = target.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise WorkerLoadError(target, f"cannot import {module_name!r}: {exc!r}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkerLoadError(target, f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _names(value: Any, target: str, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise WorkerLoadError(target, f"{what} must be a list of names")
    return [str(v) for v in value]


@dataclass
class LoadedWorkers:
    """What ``load_workers`` built: workers (not started) and workflows."""

    workers: list[Worker] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)

    @property
    def offered(self) -> list[tuple[frozenset[str] | None, list[str] | None]]:
        """``(capabilities, kinds)`` of each worker (``None``: any)."""
        return [(w.capabilities, w.kinds) for w in self.workers]

    async def start(self) -> None:
        for worker in self.workers:
            await worker.start()

    async def stop(self) -> None:
        for worker in reversed(self.workers):
            await worker.stop()


def load_workers(specs: Sequence[WorkerSpec], queue: TaskQueue) -> LoadedWorkers:
    """Import every spec's target; ``WorkerLoadError`` at the first one that fails."""
    out = LoadedWorkers()
    for spec in specs:
        obj = load_object(spec.handler)
        if isinstance(obj, Workflow):
            out.workflows.append(obj)
            log.info("workers.workflow_loaded", target=spec.handler, workflow=obj.name)
            continue
        if not callable(obj):
            raise WorkerLoadError(spec.handler, "neither a Workflow nor a callable")
        caps = spec.capabilities
        if caps is None:
            caps = _names(getattr(obj, "capabilities", None), spec.handler, "capabilities")
        kinds = spec.kinds
        if kinds is None:
            kinds = _names(getattr(obj, "kinds", None), spec.handler, "kinds")
        fallback = load_object(spec.fallback) if spec.fallback else None
        if fallback is not None and not callable(fallback):
            raise WorkerLoadError(spec.fallback or "", "the fallback is not callable")
        if caps is None and kinds is None:
            log.warning("workers.takes_everything", target=spec.handler)
        out.workers.append(
            queue.worker(
                obj,
                name=f"{spec.handler}@{uuid.uuid4().hex[:8]}",
                capabilities=caps,
                kinds=kinds,
                concurrency=spec.concurrency,
                lease=spec.lease,
                fallback=fallback,
            )
        )
        log.info("workers.handler_loaded", target=spec.handler, capabilities=caps, kinds=kinds)
    return out
