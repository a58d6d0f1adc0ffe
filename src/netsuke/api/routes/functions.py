"""``/api/v1/functions``: sandboxed user functions (``netsuke.sandbox``): CRUD, versions,
rollback and ``POST /functions/{name}/execute``.

* A function **belongs to the API key that stored its first version** (``created_by`` is
  ``Principal.owner_id``, ``<key name>:<key prefix>``, never the bare name). A
  ``user`` key sees, changes and runs only its own functions; another key's is a 404 (its
  existence is not revealed), and a name taken by someone else is a 409 on create. Operators
  and admins reach every function.
* ``POST /functions`` stores a new function (201; 409 when the name exists). The code is
  validated before anything is written (``FunctionValidationError`` → 422 with ``field``,
  ``reason``, ``line``, ``column``). ``PUT /functions/{name}`` stores a new version (the same
  content again: the same version), replacing every field (one left out gets its default).
  ``PATCH /functions/{name}`` is a JSON merge patch (RFC 7396, ``application/merge-patch+json``
  or ``application/json``): the fields sent change, ``null`` resets one, the rest is kept. A
  description or input schema that was derived from the code (the docstring; the parameters)
  follows a patched ``code``; one set by hand stays. ``ETag`` is the current version;
  ``If-Match`` on PUT, PATCH and DELETE is optional (412 when stale).
* A function stored without a description takes its docstring as the description.
* ``POST /functions/{name}/execute {"args", "version"?}`` runs one call in its own sandboxed
  worker: ``value``, ``stdout``, ``version``, ``sha256``, ``execution_id``, ``duration_ms``.
  Errors: arguments not fitting the input schema 422; the function raised, hit its memory or
  output limit or a sandbox guard 422 (``type`` says which, with the ``execution_id``); a
  result not matching the output schema or a crashed worker 502; the time limit 504; no
  isolation available (deny by default) or the sandbox closed 503.
* **Sandbox limits.** Each role has ceilings on a function's ``timeout_s`` and ``memory_mb``
  (settings ``function_max_timeout_s_<role>``, ``function_max_memory_mb_<role>``; user 60 s
  and 512 MB by default). Storing (POST, PUT) or rolling back to a version over the caller's
  ceiling is a 422 naming the field; an omitted limit defaults to the smaller of its default
  and the ceiling; every call runs with at most the caller's ceilings. Calls at once are
  bounded node-wide (``executions_max_running``, then a queue of ``executions_max_waiting``
  waiting at most ``executions_max_wait_s``) and per key (``executions_per_caller``): beyond,
  429 with ``Retry-After``, and nothing runs or is recorded.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from netsuke.sandbox import (
    ExecutionBusyError,
    ExecutionError,
    ExecutionTimeoutError,
    FunctionRaisedError,
    FunctionStore,
    FunctionValidationError,
    InvalidArgumentsError,
    InvalidResultError,
    IsolationUnavailableError,
    MemoryLimitError,
    OutputLimitError,
    SandboxClosedError,
    SandboxError,
    SandboxViolationError,
    derived_metadata,
)
from netsuke.store import FunctionDefinition, NotFoundError

from .._auth import Principal
from .._context import ApiContext
from .._merge_patch import merge_patch, openapi_body, read_merge_patch, validated
from .._problems import ProblemError
from ..deps import Caller, Ctx, Paging

__all__ = ["ExecuteRequest", "FunctionContent", "FunctionIn", "router"]

router = APIRouter(prefix="/functions", tags=["functions"])

FunctionName = Annotated[
    str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="The function's name.")
]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=100)]
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')


class FunctionContent(BaseModel):
    """A version's content (everything but the name), as sent to PUT."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=65_536)
    description: str = Field(default="", max_length=10_000)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    is_async: bool | None = None
    allowed_imports: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=50
    )
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    memory_mb: int = Field(default=512, ge=16, le=65_536)


class FunctionIn(FunctionContent):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FunctionPage(BaseModel):
    items: list[FunctionDefinition]
    next_cursor: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=1_000_000_000)


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, le=1_000_000_000)


class ExecuteResult(BaseModel):
    value: Any
    stdout: str
    function: str
    version: int
    sha256: str
    execution_id: str
    duration_ms: float
    isolation: str


def functions_of(ctx: ApiContext) -> FunctionStore:
    fs = ctx.extras.get("functions")
    if not isinstance(fs, FunctionStore):
        raise ProblemError(503, "Unavailable", "this node runs no function store")
    return fs


async def owner(ctx: ApiContext, name: str) -> str | None:
    """The owner id (``Principal.owner_id``) of the key that stored the first version of
    ``name`` (``NotFoundError`` if none)."""
    versions = await ctx.store.functions.versions(name)
    return versions[0].created_by if versions else None


async def checked(ctx: ApiContext, caller: Principal, name: str) -> None:
    """404 unless ``name`` exists and ``caller`` may reach it."""
    try:
        who = await owner(ctx, name)
    except NotFoundError:
        raise ProblemError(404, "Not found", f"no function named {name}") from None
    if not caller.owns(who):
        raise ProblemError(404, "Not found", f"no function named {name}")


def _expected(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ETAG.match(if_match.strip())
    if m is None:
        raise ProblemError(422, "Validation failed", 'If-Match: an ETag such as "3"')
    return int(m.group(1))


def _refused(exc: FunctionValidationError) -> ProblemError:
    return ProblemError(
        422,
        "Validation failed",
        str(exc)[:500],
        type="validation",
        errors=[{"field": exc.field, "reason": exc.reason}],
        line=exc.line,
        column=exc.column,
    )


def _within_ceilings(ctx: ApiContext, caller: Principal, timeout_s: float, memory_mb: int) -> None:
    """422 naming the field when a limit is over the caller's role ceiling."""
    max_timeout_s, max_memory_mb = ctx.settings.function_ceilings(caller.role)
    errors = []
    if timeout_s > max_timeout_s:
        errors.append(
            {"field": "timeout_s", "reason": f"at most {max_timeout_s:g} for a {caller.role} key"}
        )
    if memory_mb > max_memory_mb:
        errors.append(
            {"field": "memory_mb", "reason": f"at most {max_memory_mb} for a {caller.role} key"}
        )
    if errors:
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise ProblemError(422, "Validation failed", detail, type="validation", errors=errors)


def _limits(ctx: ApiContext, caller: Principal, body: FunctionContent) -> tuple[float, int]:
    """The body's limits, an omitted one lowered to the caller's ceiling; 422 when over it."""
    max_timeout_s, max_memory_mb = ctx.settings.function_ceilings(caller.role)
    given = body.model_fields_set
    timeout_s = body.timeout_s if "timeout_s" in given else min(body.timeout_s, max_timeout_s)
    memory_mb = body.memory_mb if "memory_mb" in given else min(body.memory_mb, max_memory_mb)
    _within_ceilings(ctx, caller, timeout_s, memory_mb)
    return timeout_s, memory_mb


async def _store(
    ctx: ApiContext, caller: Principal, name: str, body: FunctionContent, expected: int | None
) -> FunctionDefinition:
    fs = functions_of(ctx)
    timeout_s, memory_mb = _limits(ctx, caller, body)
    if expected is not None:
        current = await ctx.store.functions.get(name)
        if current.version != expected:
            raise ProblemError(
                412,
                "Version mismatch",
                f"the current version is {current.version}",
                type="version-mismatch",
                headers={"ETag": f'"{current.version}"'},
                current_version=current.version,
            )
    try:
        return await fs.store_function(
            name,
            body.code,
            body.description,
            body.input_schema,
            body.output_schema,
            body.is_async,
            allowed_imports=body.allowed_imports,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            actor=caller.owner_id,
        )
    except FunctionValidationError as exc:
        raise _refused(exc) from None


@router.get("", response_model=FunctionPage)
async def list_functions(ctx: Ctx, caller: Caller, page: Paging) -> FunctionPage:
    listed = await ctx.store.functions.list(limit=page.limit, cursor=page.cursor)
    items = listed.items
    if caller.role == "user":
        items = [f for f in items if caller.owns(await owner(ctx, f.name))]
    return FunctionPage(items=items, next_cursor=listed.next_cursor)


@router.post("", status_code=201, response_model=FunctionDefinition)
async def create_function(
    ctx: Ctx, caller: Caller, body: FunctionIn, response: Response
) -> FunctionDefinition:
    try:
        await ctx.store.functions.get(body.name)
    except NotFoundError:
        pass
    else:
        raise ProblemError(409, "Already exists", f"a function named {body.name} exists")
    content = FunctionContent.model_validate(body.model_dump(exclude={"name"}, exclude_unset=True))
    created = await _store(ctx, caller, body.name, content, None)
    response.headers["ETag"] = f'"{created.version}"'
    response.headers["Location"] = f"/api/v1/functions/{created.name}"
    return created


@router.get("/{name}", response_model=FunctionDefinition)
async def get_function(
    ctx: Ctx, caller: Caller, name: FunctionName, response: Response
) -> FunctionDefinition:
    await checked(ctx, caller, name)
    current = await ctx.store.functions.get(name)
    response.headers["ETag"] = f'"{current.version}"'
    return current


@router.put("/{name}", response_model=FunctionDefinition)
async def update_function(
    ctx: Ctx,
    caller: Caller,
    name: FunctionName,
    body: FunctionContent,
    response: Response,
    if_match: IfMatch = None,
) -> FunctionDefinition:
    await checked(ctx, caller, name)
    updated = await _store(ctx, caller, name, body, _expected(if_match))
    response.headers["ETag"] = f'"{updated.version}"'
    return updated


def _content(current: FunctionDefinition) -> dict[str, Any]:
    """The stored version as a PUT body (``FunctionContent``'s fields)."""
    return {
        "code": current.code,
        "description": current.description,
        "input_schema": current.input_schema,
        "output_schema": current.output_schema,
        "is_async": current.is_async,
        "allowed_imports": list(current.allowed_imports),
        "timeout_s": current.limits.timeout_s,
        "memory_mb": current.limits.memory_mb,
    }


@router.patch(
    "/{name}", response_model=FunctionDefinition, openapi_extra=openapi_body(FunctionContent)
)
async def patch_function(
    ctx: Ctx,
    caller: Caller,
    name: FunctionName,
    request: Request,
    response: Response,
    if_match: IfMatch = None,
) -> FunctionDefinition:
    """Apply a JSON merge patch to the current version; store the result as the next one."""
    await checked(ctx, caller, name)
    patch = await read_merge_patch(request)
    current = await ctx.store.functions.get(name)
    content = _content(current)
    if "code" in patch and patch["code"] != current.code:
        # what the store derived from the old code is derived again from the new code
        docstring, schema = derived_metadata(name, current.code)
        content["is_async"] = None
        if content["description"] == docstring:
            content["description"] = ""
        if content["input_schema"] == schema:
            content["input_schema"] = None
    body = validated(FunctionContent, merge_patch(content, patch))
    expected = _expected(if_match)
    updated = await _store(
        ctx, caller, name, body, current.version if expected is None else expected
    )
    response.headers["ETag"] = f'"{updated.version}"'
    return updated


@router.delete("/{name}", status_code=204)
async def delete_function(
    ctx: Ctx, caller: Caller, name: FunctionName, if_match: IfMatch = None
) -> Response:
    await checked(ctx, caller, name)
    await ctx.store.functions.delete(
        name, expected_version=_expected(if_match), actor=caller.owner_id
    )
    return Response(status_code=204)


@router.get("/{name}/versions", response_model=FunctionPage)
async def versions(ctx: Ctx, caller: Caller, name: FunctionName) -> FunctionPage:
    await checked(ctx, caller, name)
    return FunctionPage(items=await ctx.store.functions.versions(name))


@router.get("/{name}/versions/{version}", response_model=FunctionDefinition)
async def version(
    ctx: Ctx,
    caller: Caller,
    name: FunctionName,
    version: Annotated[int, Path(ge=1, le=1_000_000_000)],
) -> FunctionDefinition:
    await checked(ctx, caller, name)
    return await ctx.store.functions.get(name, version)


@router.post("/{name}/rollback", response_model=FunctionDefinition)
async def rollback(
    ctx: Ctx, caller: Caller, name: FunctionName, body: RollbackRequest, response: Response
) -> FunctionDefinition:
    await checked(ctx, caller, name)
    target = await ctx.store.functions.get(name, body.version)
    _within_ceilings(ctx, caller, target.limits.timeout_s, target.limits.memory_mb)
    restored = await ctx.store.functions.rollback(name, body.version, actor=caller.owner_id)
    response.headers["ETag"] = f'"{restored.version}"'
    return restored


def execution_problem(exc: SandboxError) -> ProblemError:
    """The problem for a refused or failed call (no host detail ever reaches it)."""
    eid = getattr(exc, "execution_id", None)
    if isinstance(exc, InvalidArgumentsError):
        return ProblemError(
            422, "Validation failed", f"args: {exc.reason}"[:500], type="validation",
            errors=[{"field": f"args{exc.path[1:]}" if exc.path != "$" else "args",
                     "reason": exc.reason[:200]}],
        )  # fmt: skip
    if isinstance(exc, FunctionValidationError):  # stored code the validator now refuses
        return _refused(exc)
    if isinstance(exc, ExecutionBusyError):
        return ProblemError(
            429, "Too many function calls", str(exc), type="too-many-executions",
            headers={"Retry-After": str(exc.retry_after_s)}, scope=exc.scope, limit=exc.limit,
        )  # fmt: skip
    if isinstance(exc, IsolationUnavailableError | SandboxClosedError):
        return ProblemError(503, "Sandbox unavailable", "no isolation is available to run it")
    if isinstance(exc, ExecutionTimeoutError):
        return ProblemError(
            504, "Function timed out", str(exc), type="function-timeout", execution_id=eid
        )
    if isinstance(exc, InvalidResultError):
        return ProblemError(
            502, "Invalid function result", exc.reason[:300], type="function-result",
            execution_id=eid,
        )  # fmt: skip
    if isinstance(exc, FunctionRaisedError):
        return ProblemError(
            422, "Function raised", f"{exc.exc_type}: {exc.message}"[:500],
            type="function-raised", execution_id=eid, traceback=exc.traceback[-4000:],
        )  # fmt: skip
    if isinstance(exc, MemoryLimitError | OutputLimitError | SandboxViolationError):
        return ProblemError(
            422, "Function stopped", str(exc)[:300], type=f"function-{exc.status}",
            execution_id=eid,
        )  # fmt: skip
    if isinstance(exc, ExecutionError):
        return ProblemError(
            502, "Function failed", type(exc).__name__, type="function-failed", execution_id=eid
        )
    return ProblemError(422, "Function refused", str(exc)[:300], type="function-refused")


@router.post("/{name}/execute", response_model=ExecuteResult)
async def execute(
    ctx: Ctx, caller: Caller, name: FunctionName, body: ExecuteRequest
) -> ExecuteResult:
    await checked(ctx, caller, name)
    try:
        max_timeout_s, max_memory_mb = ctx.settings.function_ceilings(caller.role)
        r = await functions_of(ctx).execute(
            name,
            body.args,
            version=body.version,
            caller=caller.prefix,
            max_timeout_s=max_timeout_s,
            max_memory_mb=max_memory_mb,
        )
    except SandboxError as exc:
        raise execution_problem(exc) from None
    return ExecuteResult(
        value=r.value,
        stdout=r.stdout,
        function=r.function,
        version=r.version,
        sha256=r.sha256,
        execution_id=r.execution_id,
        duration_ms=r.duration_ms,
        isolation=r.isolation,
    )
