"""API tokens: random secrets stored only as SHA-256 hashes, with scopes and roles."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.db.tables import ApiTokenORM, utcnow
from agent_manager.errors import Forbidden, InvalidRequest, NotFound, Unauthorized

Scope = Literal["submit", "work", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("submit", "work", "read", "admin")
TOKEN_PREFIX = "am_"


def hash_token(secret: str) -> str:
    # A fast hash is right here: the secret has 256 random bits, nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id, name, scopes and (for work) allowed roles."""

    token_id: str
    name: str
    scopes: frozenset[str]
    roles: frozenset[str] | None

    def has(self, scope: Scope) -> bool:
        # A submitter may read what it submitted; admin may do everything.
        implied = {"admin"} | ({"submit"} if scope == "read" else set())
        return scope in self.scopes or bool(implied & self.scopes)

    def require(self, scope: Scope) -> None:
        if not self.has(scope):
            raise Forbidden(
                f"token '{self.name}' lacks the '{scope}' scope "
                f"(it has: {', '.join(sorted(self.scopes)) or 'none'})"
            )

    def require_roles(self, roles: tuple[str, ...]) -> None:
        if self.roles is None or "admin" in self.scopes:
            return
        refused = [r for r in roles if r not in self.roles]
        if refused:
            raise Forbidden(
                f"token '{self.name}' may not claim role(s) {', '.join(refused)} "
                f"(allowed: {', '.join(sorted(self.roles))})"
            )


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    scopes: list[str]
    roles: list[str] | None
    created_at: datetime
    revoked_at: datetime | None


def _validate(scopes: list[str], roles: list[str] | None) -> None:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCOPES)}"
        )
    if roles is not None and "work" not in scopes:
        raise InvalidRequest("roles only limit the 'work' scope; add --scope work")
    if roles is not None and any(not r.strip() for r in roles):
        raise InvalidRequest("a role name is empty")


async def create_token(
    session: AsyncSession,
    *,
    name: str,
    scopes: list[str],
    roles: list[str] | None = None,
    secret: str | None = None,
) -> tuple[TokenInfo, str]:
    """Store a new token and return it with its secret (shown once, never stored)."""
    _validate(scopes, roles)
    secret = secret or new_secret()
    row = ApiTokenORM(
        id=str(uuid.uuid4()),
        name=name,
        token_hash=hash_token(secret),
        scopes=sorted(set(scopes)),
        roles=sorted(set(roles)) if roles is not None else None,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return _info(row), secret


async def list_tokens(session: AsyncSession) -> list[TokenInfo]:
    rows = await session.scalars(select(ApiTokenORM).order_by(ApiTokenORM.created_at))
    return [_info(r) for r in rows]


async def revoke_token(session: AsyncSession, *, token_id: str) -> TokenInfo:
    row = await session.get(ApiTokenORM, token_id)
    if row is None:
        matches = (
            await session.scalars(select(ApiTokenORM).where(ApiTokenORM.id.startswith(token_id)))
        ).all()
        if len(matches) != 1:
            raise NotFound(f"no single token with id '{token_id}'; see 'am token list'")
        row = matches[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return _info(row)


async def count_active_admin_tokens(session: AsyncSession) -> int:
    rows = await session.scalars(select(ApiTokenORM).where(ApiTokenORM.revoked_at.is_(None)))
    return sum(1 for row in rows if "admin" in row.scopes)


def _info(row: ApiTokenORM) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        scopes=list(row.scopes),
        roles=list(row.roles) if row.roles is not None else None,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class TokenVerifier:
    """Resolves bearer secrets to principals, caching hits briefly.

    The cache keeps a lookup off the hot path of every claim and report; a token
    revoked with ``am token revoke`` stops working within ``ttl`` seconds.
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def verify(self, session_factory: object, secret: str | None) -> Principal:
        if not secret:
            raise Unauthorized()
        digest = hash_token(secret)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        async with session_factory() as session:  # type: ignore[operator]
            row = await session.scalar(select(ApiTokenORM).where(ApiTokenORM.token_hash == digest))
        if row is None or row.revoked_at is not None:
            self._cache.pop(digest, None)
            raise Unauthorized(
                "Unknown or revoked token; ask an admin for a new one (am token create)."
            )
        principal = Principal(
            token_id=row.id,
            name=row.name,
            scopes=frozenset(row.scopes),
            roles=frozenset(row.roles) if row.roles is not None else None,
        )
        self._cache[digest] = (now + self.ttl, principal)
        return principal
