"""``am``: serve, migrate, manage tokens."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import DBAPIError

from agent_manager import __version__
from agent_manager.cli import tasks_cmd
from agent_manager.cli.demo import demo
from agent_manager.cli.stack_cmd import stack
from agent_manager.cli.worker_cmd import worker
from agent_manager.config import Settings
from agent_manager.core import auth
from agent_manager.db import migrate
from agent_manager.db.engine import Database
from agent_manager.errors import AgentManagerError
from agent_manager.logs import configure_logging

app = typer.Typer(
    help="AgentManager: a coordination server for multi-agent LLM work.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.command("worker")(worker)
app.command("demo")(demo)
app.command("stack")(stack)
tasks_cmd.register(app)

out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep and logs


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"])
            err.print(f"[red]configuration error:[/] AM_{field.upper()}: {escape(e['msg'])}")
        raise typer.Exit(2) from exc


def database_problem(exc: BaseException) -> str:
    """The driver's own words, on one line, without SQLAlchemy's wrapping."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if isinstance(cause, OSError):
        return f"cannot connect: {text}"
    return text


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (AM_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (AM_PORT)")] = None,
    database_url: Annotated[str | None, typer.Option(help="AM_DATABASE_URL")] = None,
) -> None:
    """Run the server (SQLite file by default; AM_DATABASE_URL for PostgreSQL)."""
    from agent_manager.api.server import run

    settings = load_settings(host=host, port=port, database_url=database_url)
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        run(settings)
    except AgentManagerError as exc:
        raise fail(exc.message) from exc
    except (OSError, DBAPIError) as exc:
        raise fail(f"cannot start: {database_problem(exc)}") from exc


async def _with_db(settings: Settings, fn):  # type: ignore[no-untyped-def]
    db = Database.from_url(settings.database_url)
    try:
        return await fn(db)
    finally:
        await db.dispose()


def _run_db(settings: Settings, fn):  # type: ignore[no-untyped-def]
    try:
        return asyncio.run(_with_db(settings, fn))
    except AgentManagerError as exc:
        raise fail(exc.message) from exc
    except (OSError, DBAPIError) as exc:
        raise fail(f"database {settings.database_url}: {database_problem(exc)}") from exc


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or upgrade the schema to the latest revision."""
    settings = load_settings()

    async def go(db: Database) -> str | None:
        await migrate.upgrade(db.engine, revision)
        return await migrate.current_revision(db.engine)

    current = _run_db(settings, go)
    out.print(f"database at revision [bold]{current}[/] ({db_dialect(settings)})")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the database."""
    settings = load_settings()
    current = _run_db(settings, lambda db: migrate.current_revision(db.engine))
    head = migrate.head_revision()
    state = "up to date" if current == head else f"behind: run 'am db upgrade' (head is {head})"
    out.print(f"{current or 'empty'} — {state}")


def db_dialect(settings: Settings) -> str:
    return "sqlite" if settings.is_sqlite else "postgresql"


@token_app.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="submit, work, read, admin")],
    role: Annotated[
        list[str] | None, typer.Option("--role", "-r", help="limit a work token to roles")
    ] = None,
    name: Annotated[str, typer.Option(help="a label for the token")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create a token and print its secret (shown only this once)."""
    settings = load_settings()

    async def go(db: Database) -> tuple[auth.TokenInfo, str]:
        await migrate_if_sqlite(db, settings)
        async with db.transaction() as session:
            return await auth.create_token(
                session, name=name or "-".join(scope), scopes=scope, roles=role or None
            )

    info, secret = _run_db(settings, go)
    if as_json:
        print(
            json.dumps(
                {
                    "id": info.id,
                    "name": info.name,
                    "scopes": info.scopes,
                    "roles": info.roles,
                    "token": secret,
                }
            )
        )
        return
    out.print(
        f"token [bold]{info.id}[/] ({', '.join(info.scopes)}"
        + (f"; roles {', '.join(info.roles)}" if info.roles else "")
        + ")"
    )
    out.print(secret, highlight=False, soft_wrap=True)
    err.print("Store it now: only its hash is kept.")


@token_app.command("list")
def token_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tokens (never their secrets)."""
    settings = load_settings()

    async def go(db: Database) -> list[auth.TokenInfo]:
        await migrate_if_sqlite(db, settings)
        async with db.sessions() as session:
            return await auth.list_tokens(session)

    tokens = _run_db(settings, go)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": t.id,
                        "name": t.name,
                        "scopes": t.scopes,
                        "roles": t.roles,
                        "created_at": t.created_at.isoformat(),
                        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                    }
                    for t in tokens
                ]
            )
        )
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    for column in ("name", "scopes", "roles", "created", "revoked"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            t.id,
            Text(t.name),  # a name is the user's text, not Rich markup
            ", ".join(t.scopes),
            Text(", ".join(t.roles or []) or "any"),
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "",
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="the id (or a unique prefix)")],
) -> None:
    """Revoke a token; it stops working at once on this server, within seconds elsewhere."""
    settings = load_settings()

    async def go(db: Database) -> auth.TokenInfo:
        async with db.transaction() as session:
            return await auth.revoke_token(session, token_id=token_id)

    info = _run_db(settings, go)
    out.print(f"revoked token {info.id} ({info.name})")


async def migrate_if_sqlite(db: Database, settings: Settings) -> None:
    """Token commands may run before the first ``am serve``: give SQLite its schema."""
    if db.dialect == "sqlite":
        await migrate.upgrade(db.engine)


def main() -> None:
    app()
