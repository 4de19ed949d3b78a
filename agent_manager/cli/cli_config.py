"""Where the task commands (``am submit``, ``am status``, …) find the server and token.

Each of the two values is taken from the first place that has it:

1. the flags ``--server`` / ``--token``;
2. the variables ``AM_SERVER_URL`` / ``AM_TOKEN`` (for the token, ``AM_ADMIN_TOKEN``
   after that: the variable a local ``am serve`` takes its admin token from);
3. the CLI's own file, ``$AM_CLI_CONFIG`` or ``~/.config/agent-manager/cli.json``
   (``$XDG_CONFIG_HOME`` honoured): ``{"server_url": "...", "token": "..."}``;
4. ``mcp_client_config.json`` in the current directory, the worker's file
   (``server_url``, the first if it lists several, and ``auth_token``);
5. for the URL, ``http://127.0.0.1:8001``; for the token, none.

Two rules keep a token from going where it should not: a URL found in
``./mcp_client_config.json`` (a file that may have come with a cloned repository) is
used only with that file's own token, and ``AM_ADMIN_TOKEN`` only for a server on
this machine. Every value remembers where it came from, so that an error can say
which one to fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_SERVER_URL = "http://127.0.0.1:8001"
WORKER_CONFIG = Path("mcp_client_config.json")

PRECEDENCE_HELP = (
    "Server and token come from --server/--token, else AM_SERVER_URL/AM_TOKEN "
    "(AM_ADMIN_TOKEN for the token), else ~/.config/agent-manager/cli.json "
    '({"server_url": ..., "token": ...}; AM_CLI_CONFIG names another file), else '
    "server_url/auth_token of ./mcp_client_config.json; the URL defaults to "
    f"{DEFAULT_SERVER_URL}."
)


class CLIConfigError(Exception):
    """A configuration file the CLI reads is broken; the message says which and how."""


@dataclass(frozen=True)
class Connection:
    """The server to talk to and the token to show, each with where it was found."""

    server_url: str
    token: str | None
    url_source: str
    token_source: str | None


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """The CLI's own settings file."""
    env = os.environ if env is None else env
    if env.get("AM_CLI_CONFIG", "").strip():
        return Path(env["AM_CLI_CONFIG"].strip()).expanduser()
    base = env.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base) / "agent-manager" / "cli.json"


def resolve(
    server: str | None = None,
    token: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Connection:
    """The URL and token to use, following the precedence in the module docstring."""
    env = os.environ if env is None else env
    user_file = user_config_path(env)
    worker_file = (cwd or Path.cwd()) / WORKER_CONFIG
    url, url_source = _first([(server, "--server"), (env.get("AM_SERVER_URL"), "AM_SERVER_URL")])
    secret, token_source = _first(
        [
            (token, "--token"),
            (env.get("AM_TOKEN"), "AM_TOKEN"),
            (env.get("AM_ADMIN_TOKEN"), "AM_ADMIN_TOKEN"),
        ]
    )
    # Files are read only when a value is still missing, so that a broken file
    # does not get in the way of flags or variables that already say everything.
    for path, token_key in ((user_file, "token"), (worker_file, "auth_token")):
        if url is not None and secret is not None:
            break
        data = _read(path)
        if data is None:
            continue
        if url is None:
            url, url_source = _first([(_first_url(data.get("server_url"), path), str(path))])
        if secret is None:
            value = data.get(token_key) or data.get("auth_token")
            if value is not None and not isinstance(value, str):
                raise CLIConfigError(f"{path}: {token_key} must be a string")
            secret, token_source = _first([(value, str(path))])
    if url is None:
        url, url_source = DEFAULT_SERVER_URL, "the default"
    url = url.rstrip("/")
    host = _host(url, url_source)
    if token_source == "AM_ADMIN_TOKEN" and host not in LOOPBACK:
        secret, token_source = None, None  # a local server's secret stays local
    if url_source == str(worker_file) and token_source not in (None, str(worker_file)):
        raise CLIConfigError(
            f"the server URL comes from {worker_file} but the token from {token_source}: "
            "give --server (or AM_SERVER_URL) as well, so that a file in this directory "
            "cannot send your token elsewhere"
        )
    return Connection(
        server_url=url, token=secret, url_source=url_source or "", token_source=token_source
    )


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _host(url: str, source: str | None) -> str:
    """The URL's host, or a CLIConfigError saying what is wrong with it."""
    problem = None
    if not url.startswith(("http://", "https://")):
        problem = "is not an http:// or https:// URL"
    else:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            problem = f"is not a valid URL ({exc})"
        else:
            if not parsed.host:
                problem = "has no host"
            elif parsed.port is not None and not 0 < parsed.port < 65536:
                problem = f"has a port out of range ({parsed.port})"
    if problem is not None:
        raise CLIConfigError(
            f"{source}: {url!r} {problem} — give the server's address, e.g. {DEFAULT_SERVER_URL}"
        )
    return str(parsed.host)


def _first(candidates: list[tuple[str | None, str]]) -> tuple[Any, Any]:
    """The first non-blank value and its source, or ``(None, None)``."""
    for value, source in candidates:
        if value is not None and value.strip():
            return value.strip(), source
    return None, None


def _first_url(value: Any, path: Path) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and not isinstance(value, str):
        raise CLIConfigError(f"{path}: server_url must be a URL string (or a list of them)")
    return value


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CLIConfigError(f"{path}: cannot be read ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIConfigError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise CLIConfigError(f'{path}: must hold a JSON object like {{"server_url": "..."}}')
    return data


__all__ = [
    "DEFAULT_SERVER_URL",
    "PRECEDENCE_HELP",
    "CLIConfigError",
    "Connection",
    "resolve",
    "user_config_path",
]
