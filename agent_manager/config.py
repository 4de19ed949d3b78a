"""Settings, read once at the edge (CLI and app factory) from ``AM_*`` variables and ``.env``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./agent_manager.db"


class Settings(BaseSettings):
    """Everything configurable about the server. Every field maps to ``AM_<NAME>``."""

    # An empty variable counts as unset (as in docker compose's ${VAR:-default}).
    model_config = SettingsConfigDict(
        env_prefix="AM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///file.db or "
        "postgresql+asyncpg://user@host/db",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    lease_seconds: float = Field(default=60.0, gt=0, le=86_400)
    max_claim_wait: float = Field(default=60.0, ge=0, le=600, description="cap on ?wait=")
    reaper_interval: float = Field(default=1.0, gt=0, le=60)
    retry_base_seconds: float = Field(
        default=1.0, ge=0, description="first backoff of a retryable step failure"
    )
    retry_max_seconds: float = Field(default=60.0, ge=0)
    admin_token: SecretStr | None = Field(
        default=None, description="bootstrap admin token; generated and printed once if unset"
    )
    workspace: Path = Path("./workspace")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="json: one JSON object per line; auto: text on a terminal"
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db — carries wake-ups and events between server "
        "replicas; without it each replica re-checks the database every AM_RECHECK_INTERVAL",
    )
    redis_channel: str = Field(
        default="agent_manager:notices",
        min_length=1,
        description="the pub/sub channel of this deployment's replicas",
    )
    recheck_interval: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="how often a waiting long-poll or event stream looks at the database "
        "for work another replica made ready; default 0.5 s on PostgreSQL, 2 s on SQLite "
        "(where a second server process is rare and every look takes the write lock)",
    )
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="on SIGTERM, seconds requests in flight get to finish (long-polls "
        "answer 204 at once) before they are cancelled",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="if set, GET /metrics needs 'Authorization: Bearer <this>'; "
        "unset: /metrics is open, like /healthz",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    auto_migrate: bool | None = Field(
        default=None, description="upgrade the schema on start; default: on for SQLite only"
    )

    # -- agents and the LLM ---------------------------------------------------------
    embedded_agents: bool = Field(
        default=True,
        description="run planner, auditor and synthesizer steps in the server itself",
    )
    embedded_work_roles: str = Field(
        default="",
        description="comma-separated work roles the server also runs itself with its "
        "built-in worker agent (single-process deployments)",
    )
    embedded_concurrency: int = Field(default=4, ge=1, le=64)
    planner_roles: str = Field(
        default="analyst,researcher,writer",
        description="comma-separated roles the planner may give steps",
    )
    llm_provider: Literal["auto", "openai", "scripted", "offline"] = Field(
        default="auto",
        description="auto: openai when a model, base URL or key is configured, "
        "else the scripted model (not an LLM)",
    )
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(default=60.0, gt=0)
    llm_structured_mode: Literal["auto", "json_schema", "json_object"] = "auto"
    llm_scenario: Path | None = Field(
        default=None, description="a JSON scenario file for the scripted model"
    )
    agent_max_iterations: int = Field(default=8, ge=1, le=100)
    agent_lock_wait: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="seconds an agent's file tool waits for a lock another step holds",
    )
    llm_scripted_latency: float = Field(
        default=0.0, ge=0, le=60, description="seconds each scripted-model call takes (demo pacing)"
    )

    def roles_list(self, value: str) -> list[str]:
        return [r.strip() for r in value.split(",") if r.strip()]

    def resolved_llm_provider(self) -> str:
        if self.llm_provider != "auto":
            return "scripted" if self.llm_provider == "offline" else self.llm_provider
        configured = self.llm_model or self.llm_base_url or self.llm_api_key
        return "openai" if configured or os.environ.get("OPENAI_API_KEY") else "scripted"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("AM_REDIS_URL must start with redis://, rediss:// or unix://")
        return v

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, v: str) -> str:
        # Accept the common sync spellings and map them to the async drivers we ship.
        if v.startswith("sqlite:///"):
            v = "sqlite+aiosqlite:///" + v.removeprefix("sqlite:///")
        elif v.startswith(("postgres://", "postgresql://")):
            v = "postgresql+asyncpg://" + v.split("://", 1)[1]
        if not v.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "AM_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return v

    @property
    def recheck_seconds(self) -> float:
        if self.recheck_interval is not None:
            return self.recheck_interval
        return 2.0 if self.is_sqlite else 0.5

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
