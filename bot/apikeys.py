"""API keys: created once and shown once, stored as SHA-256 hashes, revoked by name."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import audit
from bot.errors import ApiKeyError
from bot.store.db import Database
from bot.store.tables import api_keys

PREFIX = "aw_"
_TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is a hint, not worth a write per request


@dataclass(frozen=True)
class ApiKey:
    """A key's record, never the key itself."""

    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _hash(key: str) -> str:
    # Keys are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(
    db: Database, name: str, *, now: datetime, actor: str | None = None, source: str | None = audit.CLI
) -> str:
    """A new key named ``name``; the only time the key is seen. Recorded in the audit trail.

    ``actor`` is who asked for it (default: the operating system's user, as for the CLI).
    """
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
        raise ApiKeyError("NAME", "use 1 to 64 letters, digits, '-' or '_', e.g. zendesk-prod")
    key = PREFIX + secrets.token_urlsafe(32)
    await db.transact(_insert_key, name, _hash(key), now, actor or audit.cli_actor(), source)
    return key


def _insert_key(
    conn: Connection, name: str, key_hash: str, now: datetime, actor: str, source: str | None
) -> None:
    if conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first() is not None:
        raise ApiKeyError("NAME", f"a key named {name!r} exists; revoke it or choose another name")
    conn.execute(sa.insert(api_keys).values(name=name, key_hash=key_hash, created_at=now))
    audit.audited(
        conn, actor=actor, action=audit.Action.APIKEY_CREATE, subject=f"apikey:{name}", source=source, at=now
    )


async def revoke_key(
    db: Database, name: str, *, now: datetime, actor: str | None = None, source: str | None = audit.CLI
) -> bool:
    """Revoke the key named ``name``; False when there is no such active key. Recorded when revoked."""
    return await db.transact(_revoke, name, now, actor or audit.cli_actor(), source)


def _revoke(conn: Connection, name: str, now: datetime, actor: str, source: str | None) -> bool:
    revoked = sa.update(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
    if not conn.execute(revoked.values(revoked_at=now)).rowcount:
        return False
    audit.audited(
        conn, actor=actor, action=audit.Action.APIKEY_REVOKE, subject=f"apikey:{name}", source=source, at=now
    )
    return True


async def list_keys(db: Database) -> list[ApiKey]:
    """Every key's record, oldest first."""
    async with db.read() as conn:
        rows = await conn.execute(
            sa.select(
                api_keys.c.name, api_keys.c.created_at, api_keys.c.last_used_at, api_keys.c.revoked_at
            ).order_by(api_keys.c.created_at, api_keys.c.id)
        )
        return [ApiKey(r.name, r.created_at, r.last_used_at, r.revoked_at) for r in rows]


async def check_key(db: Database, key: str, *, now: datetime) -> str | None:
    """The name of the active key ``key``, or None for a wrong or revoked one."""
    if not key.startswith(PREFIX):
        return None
    digest = _hash(key)
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.last_used_at).where(
                    api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                )
            )
        ).one_or_none()
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at >= _TOUCH_EVERY:
        await db.run(sa.update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now))
    name: str = row.name
    return name
