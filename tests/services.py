"""Private PostgreSQL clusters and Redis servers for tests, on free ports.

They are what ``am stack`` runs (:mod:`agent_manager.deploy.local`), never the shared
instances on 5432 and 6379, so a test may stop, restart or kill them at will::

    with private_postgres() as pg:   # pg.url (SQLAlchemy), pg.dsn; pg.stop(), start(), restart()
        ...
    with private_redis() as redis:   # redis.url; redis.stop(), start(), ping()
        ...

Without the binaries (initdb/pg_ctl, redis-server) the tests skip with the reason;
with AM_TEST_REQUIRE_POSTGRES=1 a missing PostgreSQL fails them instead.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_manager.deploy.local import (
    PostgresCluster,
    RedisServer,
    find_postgres_bindir,
    pid_alive,
    port_in_use,
)
from tests.databases import postgres_required
from tests.server import free_port


def free_ports(count: int, *, consecutive: bool = False) -> list[int]:
    """``count`` ports free right now (``consecutive``: p, p + 1, …, as replicas use)."""
    if not consecutive:
        ports: list[int] = []
        while len(ports) < count:
            if (port := free_port()) not in ports:
                ports.append(port)
        return ports
    for _ in range(200):
        base = random.randrange(20_000, 60_000 - count)
        if not any(port_in_use(base + i) for i in range(count)):
            return [base + i for i in range(count)]
    raise RuntimeError(f"no {count} consecutive free ports found")


@contextlib.contextmanager
def scratch_dir(prefix: str = "am-test-") -> Iterator[Path]:
    """A temporary directory under the system's temp dir that the ``postgres`` user can
    reach too (pytest's ``tmp_path`` is private to the user running the tests, and
    PostgreSQL runs as ``postgres`` when the tests run as root). Removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def require_postgres_binaries() -> None:
    if find_postgres_bindir() is None:
        message = "PostgreSQL binaries (initdb, pg_ctl) not found"
        if postgres_required():
            pytest.fail(message + " and AM_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(message)


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not found")


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as gone)."""
    if not pid_alive(pid):
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no /proc here (or it just went): as far as we can tell, it lives
        return not pid_alive(pid)
    return "\nState:\tZ" in status


@contextlib.contextmanager
def private_postgres(port: int | None = None) -> Iterator[PostgresCluster]:
    """A new PostgreSQL cluster on a free port, started, with its database created;
    stopped (immediately) and deleted afterwards."""
    require_postgres_binaries()
    with scratch_dir("am-pg-") as directory:
        cluster = PostgresCluster(directory / "postgres", port or free_port())
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop("immediate")


@contextlib.contextmanager
def private_redis(port: int | None = None) -> Iterator[RedisServer]:
    """A redis-server on a free port, without persistence; stopped afterwards."""
    require_redis_server()
    with scratch_dir("am-redis-") as directory:
        redis = RedisServer(directory, port or free_port())
        redis.start()
        try:
            yield redis
        finally:
            redis.process.kill()


__all__ = [
    "free_port",
    "free_ports",
    "private_postgres",
    "private_redis",
    "process_gone",
    "require_postgres_binaries",
    "require_redis_server",
    "scratch_dir",
]
