"""The store's exceptions: one tree, every node carrying fields a caller can act on.

```
StoreError                          anything the store refuses or fails to do
├── ValidationError(field, reason)  bad input refused at the door; nothing was written
│   └── DefinitionFileError(path)   a YAML definition file that cannot be used
├── ConflictError(current_version)  optimistic concurrency: the version named is stale
│   ├── AlreadyExistsError(name)    a create for a name that is taken
│   ├── FencedError(session_id)     a turn of a session incarnation that was superseded
│   ├── SessionOwnedError(session_id, node)
│   │                               a claim of a session a live node holds
│   └── DuplicateRequestError(session_id, request_key)
│                                   a turn whose request id was already committed
├── NotFoundError(kind, key)        no such agent, function, conversation, execution, ...
├── StoreClosedError                the store was closed; nothing more is accepted
├── StoreUnavailableError(url, reason)
│                                   the database cannot be opened or written (corrupt,
│                                   locked, unreadable, read-only)
└── SchemaError                     the database's schema does not fit this code
    ├── SchemaTooNewError(database_revision, code_head)
    │                               written by a newer Netsuke: refused, never touched
    └── SchemaOutdatedError(database_revision, code_head)
                                    behind the code and not upgraded automatically
```

Usage mistakes (``ValidationError``, ``NotFoundError``) and concurrency signals
(``ConflictError``) are separate branches so an API layer maps them to 422, 404 and 409
without looking inside. Driver errors that are not the caller's fault (disk full, connection
lost) are not wrapped: they propagate as SQLAlchemy/driver exceptions.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "DefinitionFileError",
    "DuplicateRequestError",
    "FencedError",
    "NotFoundError",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SessionOwnedError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "ValidationError",
]


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class ValidationError(StoreError):
    """Input refused before anything was written.

    ``field`` names the offending field with dots for nesting (``model_settings.temperature``,
    ``tools[2]``); ``reason`` says what is wrong in words a user can act on.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class DefinitionFileError(ValidationError):
    """A definition file (``agents/*.yaml``) that cannot be parsed or validated."""

    def __init__(self, path: str, field: str, reason: str) -> None:
        self.path = path
        super().__init__(field, reason)
        self.args = (f"{path}: {field}: {reason}",)

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.reason}"


class ConflictError(StoreError):
    """An update named ``expected_version`` but the stored one is ``current_version``.

    Re-read the definition, merge, and retry with the current version."""

    def __init__(self, name: str, expected_version: int | None, current_version: int) -> None:
        self.name = name
        self.expected_version = expected_version
        self.current_version = current_version
        super().__init__(
            f"{name}: expected version {expected_version}, current version is {current_version}"
        )


class AlreadyExistsError(ConflictError):
    """A create for a ``name`` that already exists (at ``current_version``)."""

    def __init__(self, name: str, current_version: int) -> None:
        super().__init__(name, None, current_version)
        self.args = (f"{name} already exists (version {current_version})",)


class FencedError(ConflictError):
    """A turn of incarnation ``incarnation`` of session ``session_id`` was refused: another
    process claimed the session since (it is at ``current``). Nothing was written."""

    def __init__(self, session_id: str, incarnation: int, current: int) -> None:
        super().__init__(session_id, incarnation, current)
        self.session_id = session_id
        self.incarnation = incarnation
        self.current = current
        self.args = (
            f"session {session_id!r} was taken over by incarnation {current} "
            f"(this turn ran in incarnation {incarnation}); nothing was written",
        )


class SessionOwnedError(ConflictError):
    """A claim of session ``session_id`` was refused: incarnation ``incarnation`` of node
    ``node`` holds it at epoch ``epoch`` and is live. Nothing was written."""

    def __init__(self, session_id: str, node: str, incarnation: int, epoch: int) -> None:
        super().__init__(session_id, None, epoch)
        self.session_id = session_id
        self.node = node
        self.incarnation = incarnation
        self.epoch = epoch
        self.args = (f"session {session_id!r} is owned by live node {node!r} (epoch {epoch})",)


class DuplicateRequestError(ConflictError):
    """A turn of session ``session_id`` carried request id ``request_key``, which another
    turn already committed. Nothing of this turn was written; read the stored reply."""

    def __init__(self, session_id: str, request_key: str) -> None:
        super().__init__(session_id, None, 0)
        self.session_id = session_id
        self.request_key = request_key
        self.args = (f"session {session_id!r}: request id already committed; nothing written",)


class NotFoundError(StoreError):
    """No ``kind`` (agent, function, conversation, ...) with key ``key``."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"no {kind} {key!r}")


class SchemaError(StoreError):
    """The database schema (its Alembic revision) does not fit this version of the code."""

    def __init__(self, message: str, database_revision: str | None, code_head: str) -> None:
        self.database_revision = database_revision
        self.code_head = code_head
        super().__init__(message)


class SchemaTooNewError(SchemaError):
    """The database was migrated by a newer Netsuke (a revision this code does not know).

    It is refused and left untouched: upgrade Netsuke, or ``netsuke db downgrade`` with the
    newer version first."""

    def __init__(self, database_revision: str, code_head: str) -> None:
        super().__init__(
            f"database schema revision {database_revision!r} is newer than this Netsuke "
            f"(knows up to {code_head!r}); upgrade Netsuke or downgrade the database with the "
            "newer version",
            database_revision,
            code_head,
        )


class SchemaOutdatedError(SchemaError):
    """The database is behind the code and automatic upgrade is off: run ``netsuke db upgrade``."""

    def __init__(self, database_revision: str | None, code_head: str) -> None:
        super().__init__(
            f"database schema revision {database_revision!r} is behind the code ({code_head!r}); "
            "run `netsuke db upgrade`",
            database_revision,
            code_head,
        )


class StoreClosedError(StoreError):
    """The store was closed (or is closing); nothing more is accepted."""


class StoreUnavailableError(StoreError):
    """The database at ``url`` (password hidden) cannot be opened or written: ``reason`` is
    the driver's one-line message ("file is not a database", "database is locked", "attempt
    to write a readonly database", ...). Raised by ``Store.open`` and
    ``Store.check_writable`` so a node refuses to start with one line, never a traceback."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot use the store at {url}: {reason}")
