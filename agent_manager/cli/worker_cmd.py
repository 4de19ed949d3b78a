"""``am worker``: serve roles for an AgentManager server from this machine."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

# The client (and the agents and LLM SDK behind it) is imported when the command runs,
# so that every other ``am`` command does not pay for it at start-up.
DEFAULT_CONFIG_PATH = Path("mcp_client_config.json")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "text")


def worker(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="AM_WORKER_CONFIG",
            help=f"the worker's JSON settings (default: {DEFAULT_CONFIG_PATH}, if present)",
            show_default=False,
        ),
    ] = None,
    server_url: Annotated[
        list[str] | None,
        typer.Option("--server-url", "-s", help="server URL; repeat for failover"),
    ] = None,
    token: Annotated[str | None, typer.Option(help="a work token (am token create)")] = None,
    client_id: Annotated[str | None, typer.Option(help="this worker's agent id")] = None,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help="a role to serve; repeat or comma-separate"),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="steps run at once")] = None,
    workspace: Annotated[Path | None, typer.Option(help="the shared workspace")] = None,
    handler: Annotated[
        str | None,
        typer.Option(help="module:function that runs every step instead of the built-in agent"),
    ] = None,
    poll_wait: Annotated[
        float | None, typer.Option(help="seconds a claim long-polls (polling_interval_sec)")
    ] = None,
    grace_seconds: Annotated[
        float | None, typer.Option(help="on SIGTERM, how long running steps may finish")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="exit once no work is ready and nothing runs")
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(
            envvar=["AM_WORKER_LOG_LEVEL", "AM_LOG_LEVEL"], help="debug, info, warning, error"
        ),
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            envvar=["AM_WORKER_LOG_FORMAT", "AM_LOG_FORMAT"],
            help="json (one object per line), text, or auto: text on a terminal",
        ),
    ] = "auto",
) -> None:
    """Claim and run steps of your roles; stops cleanly on SIGTERM or Ctrl-C."""
    from agent_manager.client import ClientError, ConfigError, load_config, run_worker
    from agent_manager.logs import configure_logging

    if log_level.lower() not in LOG_LEVELS or log_format.lower() not in LOG_FORMATS:
        typer.echo(
            f"configuration error: --log-level takes {', '.join(LOG_LEVELS)}; "
            f"--log-format takes {', '.join(LOG_FORMATS)}",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(log_level.lower(), log_format.lower())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    roles = [r.strip() for item in role or [] for r in item.split(",") if r.strip()]
    flags: dict[str, Any] = {
        "server_url": server_url or None,
        "auth_token": token,
        "client_id": client_id,
        "roles": roles or None,
        "concurrency": concurrency,
        "workspace": workspace,
        "handler": handler,
        "polling_interval_sec": poll_wait,
        "grace_seconds": grace_seconds,
    }
    try:
        settings = load_config(
            config or DEFAULT_CONFIG_PATH, must_exist=config is not None, flags=flags
        )
        asyncio.run(run_worker(settings, burst=burst))
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"configuration error: {problem}", err=True)
        raise typer.Exit(2) from None
    except ClientError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
