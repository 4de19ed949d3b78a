"""``am stack``: the docker compose topology as local processes, for development and
for testing failover without containers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# The deploy package is imported when the command runs, like the worker's client.
STATE_DIR = Path(".am-stack")


def stack(
    replicas: Annotated[
        int, typer.Option(min=1, help="server replicas, on --port, --port + 1, …")
    ] = 1,
    workers: Annotated[int, typer.Option(min=0, help="workers (each lists every replica)")] = 2,
    port: Annotated[
        int | None, typer.Option(help="the first replica's port [default: 8001]")
    ] = None,
    postgres_port: Annotated[
        int | None, typer.Option(help="the private PostgreSQL's port [default: 5433]")
    ] = None,
    redis_port: Annotated[
        int | None, typer.Option(help="the private Redis's port [default: 6380]")
    ] = None,
    port_offset: Annotated[
        int, typer.Option(help="add this to every default port (to run a second stack)")
    ] = 0,
    host: Annotated[str, typer.Option(help="the servers' bind address (AM_HOST)")] = "127.0.0.1",
    database_url: Annotated[
        str | None,
        typer.Option(help="use this database instead of a private PostgreSQL cluster"),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="use this Redis instead of a private redis-server")
    ] = None,
    redis: Annotated[
        bool, typer.Option("--redis/--no-redis", help="give the servers a Redis (AM_REDIS_URL)")
    ] = True,
    state_dir: Annotated[
        Path, typer.Option(help="the cluster, the workspace, the logs")
    ] = STATE_DIR,
    env_file: Annotated[
        Path, typer.Option(help="variables for the services, as docker compose reads them")
    ] = Path(".env"),
    roles: Annotated[
        str | None, typer.Option(help="the workers' roles, comma-separated (AM_WORKER_ROLES)")
    ] = None,
    handler: Annotated[
        str | None,
        typer.Option(help="module:function the workers run for every step (AM_WORKER_HANDLER)"),
    ] = None,
    worker_concurrency: Annotated[
        int | None, typer.Option(min=1, help="steps each worker runs at once")
    ] = None,
    postgres_bin: Annotated[
        Path | None, typer.Option(help="the directory of initdb and pg_ctl (default: found)")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="print the services' logs")
    ] = True,
) -> None:
    """Run PostgreSQL, Redis, the server replicas and the workers as local processes,
    with the docker compose file's environment; Ctrl-C stops them all."""
    from agent_manager.deploy.stack import Stack, StackOptions
    from agent_manager.deploy.topology import (
        POSTGRES_PORT,
        REDIS_PORT,
        SERVER_PORT,
        WORKER_CONCURRENCY,
        WORKER_HANDLER,
        WORKER_ROLES,
    )

    values = {
        WORKER_ROLES.name: roles,
        WORKER_HANDLER.name: handler,
        WORKER_CONCURRENCY.name: str(worker_concurrency) if worker_concurrency else None,
    }
    options = StackOptions(
        state_dir=state_dir,
        replicas=replicas,
        workers=workers,
        host=host,
        port=port if port is not None else SERVER_PORT + port_offset,
        postgres_port=postgres_port if postgres_port is not None else POSTGRES_PORT + port_offset,
        redis_port=redis_port if redis_port is not None else REDIS_PORT + port_offset,
        database_url=database_url,
        redis_url=redis_url,
        redis=redis,
        postgres_bin=postgres_bin,
        env_file=env_file,
        values={k: v for k, v in values.items() if v is not None},
        follow=follow,
    )
    raise typer.Exit(Stack(options).run())
