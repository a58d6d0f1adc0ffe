"""API keys with roles, stored hashed.

A key is ``nsk_<prefix>_<secret>``: the prefix (8 random hex characters) is kept in clear to
find the key and show it in listings; the whole key is kept only as its sha256. The secret
part carries 256 random bits, so a fast hash is safe (no guessing is feasible) and checking a
key costs one indexed lookup and one constant-time compare.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, get_args

from sqlalchemy import Table, insert, select, update

from ._audit import write_audit
from ._engine import Database
from ._errors import NotFoundError, ValidationError
from ._models import Base, utcnow
from ._observe import operation
from ._records import ApiKey, IssuedApiKey, Role

__all__ = ["ApiKeyRepository", "hash_secret"]

_keys: Table = Base.metadata.tables["api_keys"]
PREFIX = "nsk_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(secret: str) -> str | None:
    if not secret.startswith(PREFIX):
        return None
    prefix, sep, _ = secret[len(PREFIX) :].partition("_")
    return prefix if sep and len(prefix) == 8 else None


class ApiKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, role: Role, *, actor: str | None = None) -> IssuedApiKey:
        """Issue a key. The returned secret is shown once; only its hash is stored."""
        if role not in get_args(Role):
            raise ValidationError("role", f"{role!r} is not one of {', '.join(get_args(Role))}")
        if not 0 < len(name) <= 200:
            raise ValidationError("name", "must be 1..200 characters")
        prefix = secrets.token_hex(4)
        secret = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        now = utcnow()
        values: dict[str, Any] = {
            "prefix": prefix,
            "secret_hash": hash_secret(secret),
            "name": name,
            "role": role,
            "created_by": actor,
            "created_at": now,
            "last_used_at": None,
            "revoked_at": None,
        }
        with operation("api_keys", "create", role=role):
            async with self._db.write() as conn:
                await conn.execute(insert(_keys).values(**values))
                await write_audit(
                    conn,
                    actor=actor,
                    action="api_key.create",
                    target=f"api_key:{prefix}",
                    details={"role": role, "name": name},
                )
        return IssuedApiKey(key=ApiKey.model_validate(values), secret=secret)

    async def verify(self, secret: str, *, touch: bool = False) -> ApiKey | None:
        """The active key whose secret this is, or ``None`` (unknown, wrong or revoked).

        With ``touch``, ``last_used_at`` is updated (a write on every check)."""
        prefix = _split(secret)
        if prefix is None:
            return None
        with operation("api_keys", "verify"):
            async with self._db.read() as conn:
                row = (
                    (await conn.execute(select(_keys).where(_keys.c.prefix == prefix)))
                    .mappings()
                    .first()
                )
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["secret_hash"], hash_secret(secret)):
            return None
        key = ApiKey.model_validate(dict(row))
        if touch:
            now = utcnow()
            async with self._db.write() as conn:
                await conn.execute(
                    update(_keys).where(_keys.c.prefix == prefix).values(last_used_at=now)
                )
            key = key.model_copy(update={"last_used_at": now})
        return key

    async def touch(self, prefix: str) -> None:
        """Set the key's ``last_used_at`` to now (callers rate-limit this: one write each)."""
        with operation("api_keys", "touch"):
            async with self._db.write() as conn:
                await conn.execute(
                    update(_keys).where(_keys.c.prefix == prefix).values(last_used_at=utcnow())
                )

    async def revoke(self, prefix: str, *, actor: str | None = None) -> ApiKey:
        """Revoke a key by its prefix; durable on return. Revoking twice keeps the first time."""
        with operation("api_keys", "revoke"):
            async with self._db.write() as conn:
                row = (
                    (await conn.execute(select(_keys).where(_keys.c.prefix == prefix)))
                    .mappings()
                    .first()
                )
                if row is None:
                    raise NotFoundError("api key", prefix)
                revoked_at = row["revoked_at"] or utcnow()
                await conn.execute(
                    update(_keys).where(_keys.c.prefix == prefix).values(revoked_at=revoked_at)
                )
                await write_audit(
                    conn, actor=actor, action="api_key.revoke", target=f"api_key:{prefix}"
                )
        return ApiKey.model_validate({**dict(row), "revoked_at": revoked_at})

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        stmt = select(_keys).order_by(_keys.c.id)
        if not include_revoked:
            stmt = stmt.where(_keys.c.revoked_at.is_(None))
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [ApiKey.model_validate(dict(r)) for r in rows]
