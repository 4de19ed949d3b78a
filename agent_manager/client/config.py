"""The worker's settings: ``mcp_client_config.json``, then ``AM_WORKER_*`` variables,
then command-line flags, each overriding the one before.

pydantic validates the merged result. Any problem becomes a :class:`ConfigError`
whose lines name where the bad value came from (the file, the variable or the flag),
the field, what is wrong and how to fix it, e.g.::

    mcp_client_config.json: auth_token is missing — create one with
    `am token create --scope work --role analyst` and put it in "auth_token"

(pydantic-settings is not used: the file is chosen at run time and the values come
from two variable prefixes plus flags; merging three dicts by hand keeps track of
each value's source, which is what makes these messages possible.)
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

DEFAULT_CONFIG_PATH = Path("mcp_client_config.json")
DEFAULT_SERVER_URL = "http://127.0.0.1:8001"
AGENT_ID_PATTERN = r"^[\w.:@-]+$"
TOKEN_HINT = "create one with `am token create --scope work --role analyst`"


def default_client_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LLMConfig(BaseModel):
    """The model behind the built-in agent (roles without a handler of their own)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["auto", "openai", "scripted", "offline"] = "auto"
    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    timeout: float = Field(default=60.0, gt=0)
    structured_mode: Literal["auto", "json_schema", "json_object"] = "auto"
    scenario: Path | None = None
    max_iterations: int = Field(default=8, ge=1, le=100)
    scripted_latency: float = Field(
        default=0.0, ge=0, le=60, description="seconds each scripted-model call takes (demo pacing)"
    )

    def resolved_provider(self) -> str:
        """``auto`` means openai when a model, URL or key is given, else the scripted model."""
        if self.provider == "auto":
            return "openai" if self.model or self.base_url or self.api_key else "scripted"
        return "scripted" if self.provider == "offline" else self.provider


class WorkerConfig(BaseModel):
    """Everything ``am worker`` needs. The first four fields are the seed's contract."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(
        default_factory=default_client_id, min_length=1, max_length=128, pattern=AGENT_ID_PATTERN
    )
    server_url: list[str] = Field(default_factory=lambda: [DEFAULT_SERVER_URL], min_length=1)
    auth_token: SecretStr
    polling_interval_sec: float = Field(
        default=20.0, ge=0, le=600, description="seconds each claim long-polls for work"
    )
    roles: list[str] = Field(default_factory=list, description="empty: the token's roles")
    workspace: Path = Path("workspace")
    concurrency: int = Field(default=1, ge=1, le=100)
    handler: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="module:function used for every role instead of the built-in agent",
    )
    grace_seconds: float = Field(default=30.0, ge=0)
    timeout: float = Field(default=30.0, gt=0, description="seconds per HTTP request")
    llm: LLMConfig = Field(default_factory=LLMConfig)

    @field_validator("server_url", "roles", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("server_url")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return v

    @field_validator("roles")
    @classmethod
    def _role_names(cls, v: list[str]) -> list[str]:
        for role in v:
            if not role.strip() or any(c.isspace() for c in role):
                raise ValueError(f"{role!r} is not a role name")
        return list(dict.fromkeys(v))

    @field_validator("auth_token")
    @classmethod
    def _token_given(cls, v: SecretStr) -> SecretStr:
        secret = v.get_secret_value()
        if not secret.strip():
            raise ValueError("is empty")
        if any(c.isspace() for c in secret):
            raise ValueError("contains spaces: still the example's placeholder?")
        return v


class ConfigError(Exception):
    """The worker's configuration is missing or invalid; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


#: Variables for the top-level fields, and for the LLM ones (shared with ``am serve``).
ENV_FIELDS = {
    f"AM_WORKER_{name.upper()}": name for name in WorkerConfig.model_fields if name != "llm"
}
ENV_LLM_FIELDS = {
    "AM_LLM_PROVIDER": "provider",
    "AM_LLM_BASE_URL": "base_url",
    "AM_LLM_MODEL": "model",
    "AM_LLM_API_KEY": "api_key",
    "AM_LLM_TIMEOUT": "timeout",
    "AM_LLM_STRUCTURED_MODE": "structured_mode",
    "AM_LLM_SCENARIO": "scenario",
    "AM_AGENT_MAX_ITERATIONS": "max_iterations",
    "AM_LLM_SCRIPTED_LATENCY": "scripted_latency",
}

#: How ``am worker`` spells the flag of each field, for messages.
FLAG_NAMES = {
    "client_id": "--client-id",
    "server_url": "--server-url",
    "auth_token": "--token",
    "polling_interval_sec": "--poll-wait",
    "roles": "--role",
    "workspace": "--workspace",
    "concurrency": "--concurrency",
    "handler": "--handler",
    "grace_seconds": "--grace-seconds",
    "timeout": "--timeout",
}

_FIXES = {
    "client_id": 'use letters, digits and . _ : @ -, e.g. "worker-1"',
    "server_url": f'give the server\'s address, e.g. "{DEFAULT_SERVER_URL}" (or a list of them)',
    "auth_token": f'{TOKEN_HINT} and put it in "auth_token" (or set AM_WORKER_AUTH_TOKEN)',
    "polling_interval_sec": "give the seconds a claim long-polls for work (0 to 600), e.g. 20",
    "roles": 'give a list of role names, e.g. ["analyst", "writer"]',
    "workspace": "give the path of the shared workspace directory",
    "concurrency": "give a whole number from 1 to 100",
    "handler": 'give "module:function", e.g. "my_handlers:analyse"',
    "grace_seconds": "give a number of seconds (0 or more)",
    "timeout": "give a number of seconds greater than 0",
    "llm": 'give an object, e.g. {"provider": "openai", "model": "gpt-4o-mini"}',
    "llm.provider": 'use "openai", "scripted" (alias "offline") or "auto"',
    "llm.structured_mode": 'use "auto", "json_schema" or "json_object"',
}


def load_config(
    path: Path | str | None = DEFAULT_CONFIG_PATH,
    *,
    must_exist: bool = True,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> WorkerConfig:
    """Read ``path`` (when given; a missing file is an error only with ``must_exist``),
    apply ``AM_WORKER_*``/``AM_LLM_*`` from ``env`` (default: ``os.environ``), then
    ``flags`` (``None`` values are skipped). Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # field -> where its value came from
    label = str(path) if path is not None else "configuration"
    found = False
    if path is not None:
        found = _read_file(Path(path), must_exist, values, sources)

    for var, name in ENV_FIELDS.items():
        if env.get(var, "").strip():
            values[name], sources[name] = env[var].strip(), var
    file_llm = values.get("llm")
    llm: dict[str, Any] = {}
    for var, name in ENV_LLM_FIELDS.items():
        if env.get(var, "").strip():
            llm[name], sources[f"llm.{name}"] = env[var].strip(), var
    has_key = "api_key" in llm or (isinstance(file_llm, dict) and file_llm.get("api_key"))
    if not has_key and env.get("OPENAI_API_KEY", "").strip():
        llm["api_key"], sources["llm.api_key"] = env["OPENAI_API_KEY"].strip(), "OPENAI_API_KEY"
    if llm and (file_llm is None or isinstance(file_llm, dict)):
        values["llm"] = {**(file_llm or {}), **llm}  # else: validation reports the bad value
    for name, value in (flags or {}).items():
        if value is not None:
            values[name], sources[name] = value, FLAG_NAMES.get(name, name)

    try:
        return WorkerConfig.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if error["type"] == "missing" and tuple(error["loc"]) == ("auth_token",) and not found:
                problems.append(
                    f"{label}: not found, and no auth_token from AM_WORKER_AUTH_TOKEN or "
                    f"--token — copy mcp_client_config.example.json to {label} and set "
                    f'"auth_token" ({TOKEN_HINT})'
                    if path is not None
                    else f"auth_token is missing — set AM_WORKER_AUTH_TOKEN or pass --token "
                    f"({TOKEN_HINT})"
                )
            else:
                problems.append(_problem(error, sources, label))
        raise ConfigError(problems) from None


def _read_file(
    path: Path, must_exist: bool, values: dict[str, Any], sources: dict[str, str]
) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if must_exist:
            raise ConfigError(
                [
                    f"{path}: no such file — copy mcp_client_config.example.json to {path} "
                    "and fill in server_url and auth_token, or pass --config with the right path"
                ]
            ) from None
        return False
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot be read ({reason})"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [
                f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
                "— fix the file (see mcp_client_config.example.json)"
            ]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"{path}: must hold a JSON object like "
                '{"server_url": "...", "auth_token": "..."}, '
                f"not a {type(data).__name__}"
            ]
        )
    values.update(data)
    for name in data:
        sources[name] = str(path)
    if isinstance(data.get("llm"), dict):
        for name in data["llm"]:
            sources[f"llm.{name}"] = str(path)
    return True


def _problem(error: Any, sources: Mapping[str, str], label: str) -> str:
    loc = [str(p) for p in error["loc"]]
    field = loc[0] if loc else "configuration"
    dotted = ".".join(p for p in loc if not p.isdigit())  # "llm.timeout"
    shown = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc).lstrip(".")  # "roles[1]"
    where = sources.get(dotted) or sources.get(field) or label
    if error["type"] == "missing":
        what = f"{dotted} is missing"
    elif error["type"] == "extra_forbidden":
        known = WorkerConfig.model_fields if len(loc) == 1 else LLMConfig.model_fields
        return (
            f"{where}: unknown setting '{dotted}' — remove it or fix its spelling "
            f"(known: {', '.join(known)})"
        )
    elif error["type"] == "string_pattern_mismatch":
        what = f"{shown}: {error['input']!r} is not allowed"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        what = f"{shown}: {message}"
    fix = _FIXES.get(dotted) or _FIXES.get(field)
    return f"{where}: {what}" + (f" — {fix}" if fix else "")


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SERVER_URL",
    "ConfigError",
    "LLMConfig",
    "WorkerConfig",
    "default_client_id",
    "load_config",
]
