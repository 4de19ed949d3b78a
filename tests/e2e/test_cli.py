"""The ``am`` commands as a user runs them: tokens, migrations, and their errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import claim, submit
from tests.processes import ServerProcess


def am(*args: str, db_url: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_manager", *args],
        env={**os.environ, "AM_DATABASE_URL": db_url, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_token_lifecycle_from_the_command_line(db_url: str, tmp_path: Path) -> None:
    upgraded = am("db", "upgrade", db_url=db_url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "0001" in upgraded.stdout
    current = am("db", "current", db_url=db_url, cwd=tmp_path)
    assert "up to date" in current.stdout

    made = am(
        "token",
        "create",
        "--scope",
        "work",
        "--role",
        "analyst",
        "--json",
        db_url=db_url,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["scopes"] == ["work"] and token["roles"] == ["analyst"]
    assert token["token"].startswith("am_")

    listed = json.loads(am("token", "list", "--json", db_url=db_url, cwd=tmp_path).stdout)
    assert token["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)  # secrets are never listed
    table = am("token", "list", db_url=db_url, cwd=tmp_path, COLUMNS="200").stdout
    header = next(line for line in table.splitlines() if "scopes" in line)
    row = next(line for line in table.splitlines() if token["id"] in line)
    # Each value sits under its own header: the id first, then the name.
    assert header.index("id") < header.index("name") < header.index("scopes")
    assert abs(row.index(token["id"]) - header.index("id")) <= 2

    with ServerProcess(db_url, tmp_path) as server:
        async with server.client() as admin:
            await submit(admin, {"goal": "g", "steps": [{"id": "a", "role": "analyst"}]})
        async with server.client(token["token"]) as worker:
            assert await claim(worker, "analyst") is not None
            refused = await worker.get(
                "/v1/tasks/ready", params={"agent_id": "w", "role": "writer"}
            )
            assert refused.status_code == 403 and "writer" in refused.json()["message"]

            revoked = am("token", "revoke", token["id"][:8], db_url=db_url, cwd=tmp_path)
            assert revoked.returncode == 0, revoked.stderr
            # The server caches tokens for a few seconds; then the revocation holds.
            for _ in range(100):
                r = await worker.get("/v1/tasks/ready", params={"agent_id": "w", "role": "analyst"})
                if r.status_code == 401:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 401

    listed = json.loads(am("token", "list", "--json", db_url=db_url, cwd=tmp_path).stdout)
    assert next(t for t in listed if t["id"] == token["id"])["revoked_at"] is not None


def test_command_line_mistakes_get_clear_messages(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    bad_scope = am("token", "create", "--scope", "everything", db_url=db_url, cwd=tmp_path)
    assert bad_scope.returncode != 0
    assert "everything" in bad_scope.stderr and "submit, work, read, admin" in bad_scope.stderr
    roles_without_work = am(
        "token", "create", "--scope", "read", "--role", "x", db_url=db_url, cwd=tmp_path
    )
    assert roles_without_work.returncode != 0 and "work" in roles_without_work.stderr
    unknown = am("token", "revoke", "nope", db_url=db_url, cwd=tmp_path)
    assert unknown.returncode != 0 and "nope" in unknown.stderr
    bad_url = am("db", "upgrade", db_url="mysql://x", cwd=tmp_path)
    assert bad_url.returncode == 2 and "AM_DATABASE_URL" in bad_url.stderr
    unreachable = am(
        "db", "upgrade", db_url="postgresql+asyncpg://root@127.0.0.1:1/none", cwd=tmp_path
    )
    assert unreachable.returncode != 0 and "cannot connect" in unreachable.stderr
    for result in (bad_scope, unknown, bad_url, unreachable):
        assert "Traceback" not in result.stderr


def test_serve_on_an_old_postgres_schema_says_what_to_run(tmp_path: Path) -> None:
    # A server that may not migrate (the default on PostgreSQL) refuses an empty schema.
    import pytest

    from tests.databases import postgres_database

    async def go() -> subprocess.CompletedProcess[str]:
        async with postgres_database() as url:
            return await asyncio.to_thread(
                am, "serve", "--port", "1", db_url=url, cwd=tmp_path, AM_AUTO_MIGRATE="false"
            )

    try:
        result = asyncio.run(go())
    except pytest.skip.Exception:
        raise
    assert result.returncode != 0
    assert "am db upgrade" in result.stderr and "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_says_so_before_starting_anything(tmp_path: Path) -> None:
    import socket

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = am("serve", "--port", str(port), db_url=db_url, cwd=tmp_path)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "AM_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "am.db").exists()  # nothing was started or created
