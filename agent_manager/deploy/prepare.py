"""The one-shot step before the servers start (the compose file's ``migrate`` service,
and ``am stack``): ``python -m agent_manager.deploy.prepare``.

1. Upgrade the schema to the latest revision (what ``am db upgrade`` does), waiting a
   while for a database that is still starting.
2. Register ``AM_ADMIN_TOKEN`` (as every server would at start; doing it once here
   means replicas starting together do not race to insert the same token).
3. Register ``AM_WORKER_AUTH_TOKEN``, when set, with the ``work`` scope only, so the
   workers do not need the admin token.

Settings come from the environment (``AM_DATABASE_URL`` …) like ``am serve``'s.
Exit code 0 when done, 1 with one line saying why otherwise.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from agent_manager.api.app import bootstrap_admin_token
from agent_manager.config import Settings
from agent_manager.core import auth
from agent_manager.db import migrate
from agent_manager.db.engine import Database
from agent_manager.db.tables import ApiTokenORM
from agent_manager.errors import AgentManagerError
from agent_manager.retry import RetryPolicy

WORKER_TOKEN_VARIABLE = "AM_WORKER_AUTH_TOKEN"
WORKER_TOKEN_NAME = f"workers ({WORKER_TOKEN_VARIABLE})"


async def ensure_work_token(db: Database, secret: str) -> bool:
    """Store ``secret`` as a ``work`` token unless it is known; True when it was added."""
    async with db.transaction() as session:
        row = await session.scalar(
            select(ApiTokenORM).where(ApiTokenORM.token_hash == auth.hash_token(secret))
        )
        if row is not None:
            if row.revoked_at is not None:
                raise AgentManagerError(
                    f"{WORKER_TOKEN_VARIABLE} is a revoked token: choose a new one"
                )
            return False
        await auth.create_token(session, name=WORKER_TOKEN_NAME, scopes=["work"], secret=secret)
        return True


async def wait_for_database(db: Database, timeout: float) -> None:
    """Until the database accepts a connection (a container may still be starting)."""
    policy = RetryPolicy(base=0.5, maximum=5.0)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            async with db.engine.connect():
                return
        except (OSError, DBAPIError):
            attempt += 1
            if time.monotonic() + policy.delay(attempt) > deadline:
                raise
            await asyncio.sleep(policy.delay(attempt))


async def prepare(settings: Settings, worker_token: str | None, wait: float = 60.0) -> str:
    """Steps 1-3; returns a line saying what was done."""
    db = Database.from_url(settings.database_url)
    try:
        await wait_for_database(db, wait)
        await migrate.upgrade(db.engine)
        revision = await migrate.current_revision(db.engine)
        await bootstrap_admin_token(db, settings)
        said = f"database at revision {revision} ({db.dialect})"
        if worker_token:
            added = await ensure_work_token(db, worker_token)
            said += "; worker token " + ("registered" if added else "already registered")
        return said
    finally:
        await db.dispose()


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            print(f"configuration error: AM_{field.upper()}: {error['msg']}", file=sys.stderr)
        return 2
    worker_token = os.environ.get(WORKER_TOKEN_VARIABLE, "").strip() or None
    try:
        print(asyncio.run(prepare(settings, worker_token)), flush=True)
    except AgentManagerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, DBAPIError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        print(f"error: database {where}: {cause}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
