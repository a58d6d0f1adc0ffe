"""``FunctionStore``: the function store of seed 004, persisted through ``netsuke.store``.

::

    functions = FunctionStore(store, sandbox, events=rt.events)
    await functions.store_function(name="add", code=CODE, input_schema=..., output_schema=...)
    result = await functions.execute_function("add", {"a": 1, "b": 2})

* ``store_function`` validates the code (``check_function``: static policy, imports within the
  operator allow-list, parameters against the input schema) and the schemas, then stores it as
  a new version unless the content equals the current version (same sha256 and settings: no
  new version). Refusals raise ``FunctionValidationError`` and write nothing.
* ``execute_function(name, args, *, version=None)`` checks the stored code again with the
  store-time validator (a row written around the store, or code stored before the policy
  tightened, is refused with ``FunctionValidationError``; a passing version is remembered by
  its sha256), validates ``args`` against the input schema (``InvalidArgumentsError``), runs the
  call in the sandbox, validates the value against the
  output schema (``InvalidResultError``) and returns it. Every call, refused or not, is
  recorded as one ``function_call`` execution (status, duration, error; ``details`` holds the
  version, sha256, isolation and outcome) and published as ``function.executed``.
* With a ``gate`` (``ExecutionGate``), each call first takes a slot for its ``caller``: too
  many at once raises ``ExecutionBusyError`` before anything runs or is recorded.
  ``max_timeout_s``/``max_memory_mb`` lower the stored limits for one call (the API passes
  the caller's role ceilings).
* ``rollback``, ``delete``, ``versions``, ``get``, ``list`` go to the store's repository.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.validators import validator_for

from netsuke.events import topics
from netsuke.store import (
    Execution,
    FunctionDefinition,
    Page,
    Store,
    ValidationError,
    check_json,
)

from ._errors import (
    ExecutionError,
    FunctionValidationError,
    InvalidArgumentsError,
    InvalidResultError,
    SandboxError,
)
from ._gate import ExecutionGate
from ._observe import METRICS, log, tracer
from ._policy import check_function, schema_from_parameters
from ._sandbox import RunResult, Sandbox

if TYPE_CHECKING:
    from pydantic_ai import Tool

    from netsuke.events import EventBus

__all__ = ["ExecutionResult", "FunctionStore"]


@dataclass(frozen=True)
class ExecutionResult:
    """A successful call with its provenance."""

    value: Any
    stdout: str
    function: str
    version: int
    sha256: str
    execution_id: str
    duration_ms: float
    isolation: str


class FunctionStore:
    """Versioned user functions executed in ``sandbox``. ``allowed_imports`` defaults to the
    sandbox's operator allow-list."""

    def __init__(
        self,
        store: Store,
        sandbox: Sandbox | None = None,
        *,
        events: EventBus | None = None,
        allowed_imports: Iterable[str] | None = None,
        gate: ExecutionGate | None = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox or Sandbox()
        self.events = events
        self.gate = gate
        self.operator_imports = frozenset(
            self.sandbox.config.allowed_imports if allowed_imports is None else allowed_imports
        )
        self._checked: set[tuple[str, str, bool, tuple[str, ...]]] = set()

    async def store_function(
        self,
        name: str,
        code: str,
        description: str = "",
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        is_async: bool | None = None,
        *,
        allowed_imports: Iterable[str] = (),
        timeout_s: float = 30.0,
        memory_mb: int = 512,
        actor: str | None = None,
    ) -> FunctionDefinition:
        """Validate and store ``name``; returns the stored (possibly unchanged) version.
        Without an ``input_schema`` one naming the parameters is stored; without a
        ``description``, the function's docstring."""
        imports = list(allowed_imports)
        try:
            checked = check_function(
                name,
                code,
                is_async=is_async,
                input_schema=input_schema,
                allowed_imports=imports,
                operator_imports=self.operator_imports,
                max_code_bytes=self.sandbox.config.max_code_bytes,
            )
        except FunctionValidationError as exc:
            METRICS.refused += 1
            log.info("sandbox.function.refused", function=name, field=exc.field, reason=exc.reason)
            raise
        draft = {
            "name": name,
            "code": code,
            "description": description or checked.docstring,
            "input_schema": input_schema or schema_from_parameters(checked),
            "output_schema": output_schema,
            "is_async": checked.is_async,
            "limits": {"timeout_s": timeout_s, "memory_mb": memory_mb},
            "allowed_imports": imports,
        }
        try:
            return await self.store.functions.put(draft, actor=actor)
        except ValidationError as exc:
            METRICS.refused += 1
            raise FunctionValidationError(exc.field, exc.reason) from None

    async def get(self, name: str, version: int | None = None) -> FunctionDefinition:
        return await self.store.functions.get(name, version)

    async def versions(self, name: str) -> list[FunctionDefinition]:
        return await self.store.functions.versions(name)

    async def list(self, *, limit: int = 50, cursor: str | None = None) -> Page[FunctionDefinition]:
        return await self.store.functions.list(limit=limit, cursor=cursor)

    async def rollback(
        self, name: str, to_version: int, *, actor: str | None = None
    ) -> FunctionDefinition:
        """A new current version with ``to_version``'s content."""
        return await self.store.functions.rollback(name, to_version, actor=actor)

    async def delete(self, name: str, *, actor: str | None = None) -> None:
        await self.store.functions.delete(name, actor=actor)

    async def execute_function(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        parent_id: str | None = None,
    ) -> Any:
        """Run ``name`` (current version, or ``version``) with ``args``; returns its value."""
        result = await self.execute(name, args, version=version, parent_id=parent_id)
        return result.value

    async def execute(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        parent_id: str | None = None,
        caller: str | None = None,
        max_timeout_s: float | None = None,
        max_memory_mb: int | None = None,
    ) -> ExecutionResult:
        """Like ``execute_function`` but returns the value with its provenance. ``caller``
        names who calls, for the gate's per-caller bound; ``max_timeout_s``/``max_memory_mb``
        cap the stored limits for this call. Arguments that cannot be stored and served back
        (lone surrogates, nesting past ``MAX_JSON_DEPTH``) are refused before anything runs or
        is recorded."""
        args = dict(args or {})
        check_json(args, "args")
        definition = await self.store.functions.get(name, version)
        if self.gate is None:
            return await self._execute(definition, args, parent_id, max_timeout_s, max_memory_mb)
        async with self.gate.slot(caller):
            return await self._execute(definition, args, parent_id, max_timeout_s, max_memory_mb)

    async def _execute(
        self,
        definition: FunctionDefinition,
        args: dict[str, Any],
        parent_id: str | None,
        max_timeout_s: float | None,
        max_memory_mb: int | None,
    ) -> ExecutionResult:
        name = definition.name
        timeout_s = definition.limits.timeout_s
        if max_timeout_s is not None:
            timeout_s = min(timeout_s, max_timeout_s)
        memory_mb = definition.limits.memory_mb
        if max_memory_mb is not None:
            memory_mb = min(memory_mb, max_memory_mb)
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        status, error, outcome = "succeeded", None, "succeeded"
        run: RunResult | None = None
        with tracer.start_as_current_span("sandbox.execute") as span:
            span.set_attribute("netsuke.function", name)
            span.set_attribute("netsuke.function.version", definition.version)
            try:
                self._check_stored(definition)
                _validate(definition.input_schema, args, name, "input")
                run = await self.sandbox.run(
                    definition.code,
                    name,
                    args,
                    is_async=definition.is_async,
                    timeout_s=timeout_s,
                    memory_mb=memory_mb,
                    allowed_imports=definition.allowed_imports,
                    validate=False,  # just checked, against this store's operator allow-list
                )
                _validate(definition.output_schema, run.value, name, "output")
            except SandboxError as exc:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                outcome = exc.status if isinstance(exc, ExecutionError) else _refusal(exc)
                span.set_attribute("netsuke.outcome", outcome)
                execution_id = await self._record(
                    definition, started_at, t0, status, error, outcome, run, parent_id
                )
                if isinstance(exc, ExecutionError):
                    exc.function, exc.version, exc.execution_id = (
                        name,
                        definition.version,
                        execution_id,
                    )
                raise
            except BaseException:
                await self._record(
                    definition,
                    started_at,
                    t0,
                    "cancelled",
                    "cancelled",
                    "cancelled",
                    run,
                    parent_id,
                )
                raise
            span.set_attribute("netsuke.outcome", outcome)
            execution_id = await self._record(
                definition, started_at, t0, status, error, outcome, run, parent_id
            )
        assert run is not None
        return ExecutionResult(
            value=run.value,
            stdout=run.stdout,
            function=name,
            version=definition.version,
            sha256=definition.sha256,
            execution_id=execution_id,
            duration_ms=run.duration_ms,
            isolation=run.isolation,
        )

    def _check_stored(self, definition: FunctionDefinition) -> None:
        """The store-time validator on a stored version (remembered once it passed)."""
        imports = tuple(definition.allowed_imports)
        key = (definition.name, definition.sha256, definition.is_async, imports)
        if key in self._checked:
            return
        check_function(
            definition.name,
            definition.code,
            is_async=definition.is_async,
            allowed_imports=imports,
            operator_imports=self.operator_imports,
            max_code_bytes=self.sandbox.config.max_code_bytes,
        )
        if len(self._checked) >= 1024:
            self._checked.clear()
        self._checked.add(key)

    async def _record(
        self,
        definition: FunctionDefinition,
        started_at: datetime,
        t0: float,
        status: str,
        error: str | None,
        outcome: str,
        run: RunResult | None,
        parent_id: str | None,
    ) -> str:
        seconds = time.perf_counter() - t0
        METRICS.observe(outcome, seconds)
        execution = Execution(
            kind="function_call",
            status=status,  # type: ignore[arg-type]
            function_name=definition.name,
            parent_id=parent_id,
            started_at=started_at,
            ended_at=datetime.now(UTC),
            duration_ms=seconds * 1000.0,
            error=error,
            details={
                "version": definition.version,
                "sha256": definition.sha256,
                "outcome": outcome,
                "isolation": self.sandbox.isolation,
                "seccomp": run.seccomp if run else None,
            },
        )
        try:
            await self.store.executions.record(execution)
        except Exception as exc:  # the call's outcome stands; the record failure is logged
            log.warning("sandbox.execution.record_failed", function=definition.name, error=str(exc))
        if self.events is not None:
            self.events.publish(
                topics.FUNCTION_EXECUTED,
                function=definition.name,
                version=definition.version,
                sha256=definition.sha256,
                status=outcome,
                duration=seconds,
                execution=execution.id,
            )
        log.info(
            "sandbox.function.executed",
            function=definition.name,
            version=definition.version,
            outcome=outcome,
            duration_ms=round(seconds * 1000.0, 3),
        )
        return execution.id

    async def as_tool(self, name: str, *, version: int | None = None) -> Tool[Any]:
        """A pydantic-ai ``Tool`` for ``name`` (see ``function_tool``)."""
        from ._tool import function_tool

        return function_tool(self, await self.get(name, version), pin_version=version is not None)


def _refusal(exc: SandboxError) -> str:
    if isinstance(exc, InvalidArgumentsError):
        return "invalid_arguments"
    return "refused"


def _validate(schema: dict[str, Any] | None, value: Any, name: str, what: str) -> None:
    if schema is None:
        return
    validator = validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return
    path = "$" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)
    if what == "input":
        raise InvalidArgumentsError(name, error.message[:500], path)
    raise InvalidResultError(f"{path}: {error.message[:500]}")
