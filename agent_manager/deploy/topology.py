"""The production topology, described once: which services run, on which ports, with
which environment.

Two places run it. ``docker-compose.yml`` runs it as containers (a test checks that
the file says exactly what :func:`compose_services` says), and ``am stack`` runs it as
local processes from :func:`local_services`. Both come from :func:`build`, so a
variable added to a service shows up in both, and the compose test fails until the
file has it too.

Values an operator chooses (tokens, roles, the model) are :class:`Var` references:
in the compose file they become ``${NAME:-default}`` interpolations read from
``.env``; ``am stack`` resolves them from its flags, the environment and ``.env``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

ServiceKind = Literal["postgres", "redis", "migrate", "server", "worker"]

#: The names, ports and database of the seed's deployment.
SERVER = "agent-manager"
POSTGRES = "postgres"
REDIS = "redis"
MIGRATE = "migrate"
SERVER_PORT = 8001
POSTGRES_PORT = 5433  # on the host; 5432 inside its container
REDIS_PORT = 6380  # on the host; 6379 inside its container
DATABASE = "agent_manager"  # the database and its owner
CONTAINER_WORKSPACE = "/data/workspace"

SERVE = ("am", "serve")
WORK = ("am", "worker")
PREPARE = ("python", "-m", "agent_manager.deploy.prepare")
REDIS_SERVER = ("redis-server", "--save", "", "--appendonly", "no")

#: depends_on conditions, as docker compose spells them.
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"


@dataclass(frozen=True)
class Var:
    """A value the operator chooses, in ``.env`` or the environment.

    ``default`` None means required. ``generated`` secrets are made up by ``am stack``
    when unset (the compose file insists on them instead).
    """

    name: str
    help: str
    default: str | None = None
    generated: bool = False

    def compose(self) -> str:
        """The docker compose interpolation of this variable."""
        if self.default is None:
            return f"${{{self.name}:?set {self.name} in .env}}"
        return f"${{{self.name}:-{self.default}}}"


ADMIN_TOKEN = Var(
    "AM_ADMIN_TOKEN",
    "the admin token (any long random string); submit tasks and create tokens with it",
    generated=True,
)
WORKER_TOKEN = Var(
    "AM_WORKER_AUTH_TOKEN",
    "the workers' token; the migrate step registers it with the 'work' scope only",
    generated=True,
)
POSTGRES_PASSWORD = Var(
    "POSTGRES_PASSWORD",
    "the database password (compose only; letters and digits, it goes into a URL)",
)
LOG_LEVEL = Var(
    "AM_LOG_LEVEL", "log level of the servers and workers: debug, info, warning, error", "info"
)
WORKER_ROLES = Var(
    "AM_WORKER_ROLES", "comma-separated roles the workers serve", "analyst,researcher,writer"
)
WORKER_CONCURRENCY = Var("AM_WORKER_CONCURRENCY", "steps each worker runs at once", "2")
WORKER_HANDLER = Var(
    "AM_WORKER_HANDLER",
    "module:function run for every step instead of the built-in agent (empty: the agent)",
    "",
)
LLM_PROVIDER = Var(
    "AM_LLM_PROVIDER",
    "auto (openai when a model, URL or key is set, else the scripted model), openai, scripted",
    "auto",
)
LLM_BASE_URL = Var("AM_LLM_BASE_URL", "any OpenAI-compatible endpoint (empty: OpenAI's own)", "")
LLM_MODEL = Var("AM_LLM_MODEL", "the model name, e.g. gpt-4o-mini", "")
LLM_API_KEY = Var("AM_LLM_API_KEY", "the model API key (a local endpoint needs none)", "")

#: Every variable the topology reads, in the order ``.env.example`` documents them.
VARIABLES: tuple[Var, ...] = (
    ADMIN_TOKEN,
    WORKER_TOKEN,
    POSTGRES_PASSWORD,
    LOG_LEVEL,
    WORKER_ROLES,
    WORKER_CONCURRENCY,
    WORKER_HANDLER,
    LLM_PROVIDER,
    LLM_BASE_URL,
    LLM_MODEL,
    LLM_API_KEY,
)

_LLM = {v.name: v for v in (LLM_PROVIDER, LLM_BASE_URL, LLM_MODEL, LLM_API_KEY)}

EnvValue = str | Var


@dataclass(frozen=True)
class Port:
    """A published port: ``host`` on the machine, ``container`` inside the service."""

    host: int
    container: int
    host_ip: str = ""

    def compose(self) -> str:
        mapping = f"{self.host}:{self.container}"
        return f"{self.host_ip}:{mapping}" if self.host_ip else mapping


@dataclass(frozen=True)
class Service:
    """One service of the topology."""

    name: str
    kind: ServiceKind
    command: tuple[str, ...] = ()  # empty: the image's own
    env: Mapping[str, EnvValue] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    depends_on: Mapping[str, str] = field(default_factory=dict)  # name -> condition
    url: str | None = None  # a server's address, as the workers reach it

    @property
    def one_shot(self) -> bool:
        """Runs to completion before its dependents start (the others run until stopped)."""
        return self.kind == "migrate"

    def compose_env(self) -> dict[str, str]:
        """The environment as the compose file writes it."""
        return {k: v.compose() if isinstance(v, Var) else v for k, v in self.env.items()}

    def variables(self) -> list[Var]:
        return [v for v in self.env.values() if isinstance(v, Var)]


@dataclass(frozen=True)
class Layout:
    """Where the services listen and how they reach each other."""

    database_url: str
    redis_url: str | None
    bind_host: str  # AM_HOST of the servers
    server_ports: Sequence[int]  # one per replica: where each listens
    server_urls: Sequence[str]  # one per replica: how the workers reach it
    workspace: str  # shared by the servers and the workers
    workers: int = 2
    postgres_port: int = POSTGRES_PORT
    redis_port: int = REDIS_PORT
    #: Published ports: a container listens on its standard port and is published on
    #: the seed's; a local process listens on the published port itself.
    containers: bool = False


def build(layout: Layout) -> dict[str, Service]:
    """Every service of ``layout``, in start order (each after what it depends on)."""
    replicas = len(layout.server_ports)
    if replicas < 1 or len(layout.server_urls) != replicas:
        raise ValueError("give one port and one URL per server replica")
    services: dict[str, Service] = {}

    def add(service: Service) -> None:
        services[service.name] = service

    def published(host: int, container: int, host_ip: str = "") -> tuple[Port, ...]:
        return (Port(host, container if layout.containers else host, host_ip),)

    add(
        Service(
            POSTGRES,
            "postgres",
            env={
                "POSTGRES_USER": DATABASE,
                "POSTGRES_PASSWORD": POSTGRES_PASSWORD,
                "POSTGRES_DB": DATABASE,
            },
            # Only this machine may reach the database and Redis directly.
            ports=published(layout.postgres_port, 5432, "127.0.0.1"),
        )
    )
    if layout.redis_url is not None:
        add(
            Service(
                REDIS,
                "redis",
                command=REDIS_SERVER,
                ports=published(layout.redis_port, 6379, "127.0.0.1"),
            )
        )
    add(
        Service(
            MIGRATE,
            "migrate",
            command=PREPARE,
            env={
                "AM_DATABASE_URL": layout.database_url,
                "AM_ADMIN_TOKEN": ADMIN_TOKEN,
                "AM_WORKER_AUTH_TOKEN": WORKER_TOKEN,
            },
            depends_on={POSTGRES: HEALTHY},
        )
    )
    server_deps = {POSTGRES: HEALTHY, MIGRATE: COMPLETED}
    if layout.redis_url is not None:
        server_deps = {POSTGRES: HEALTHY, REDIS: HEALTHY, MIGRATE: COMPLETED}
    names = [SERVER] if replicas == 1 else [f"{SERVER}-{i + 1}" for i in range(replicas)]
    for name, port, url in zip(names, layout.server_ports, layout.server_urls, strict=True):
        env: dict[str, EnvValue] = {
            "AM_DATABASE_URL": layout.database_url,
            **({"AM_REDIS_URL": layout.redis_url} if layout.redis_url is not None else {}),
            "AM_HOST": layout.bind_host,
            "AM_PORT": str(port),
            "AM_ADMIN_TOKEN": ADMIN_TOKEN,
            "AM_AUTO_MIGRATE": "false",  # the migrate service's job
            "AM_WORKSPACE": layout.workspace,
            "AM_LOG_FORMAT": "json",
            "AM_LOG_LEVEL": LOG_LEVEL,
            **_LLM,
        }
        add(
            Service(
                name,
                "server",
                command=SERVE,
                env=env,
                ports=published(port, SERVER_PORT),
                depends_on=server_deps,
                url=url,
            )
        )
    for n in range(layout.workers):
        # Each worker lists every replica, starting from a different one, so that the
        # load spreads and each fails over to the next when its server goes away.
        urls = [*layout.server_urls[n % replicas :], *layout.server_urls[: n % replicas]]
        add(
            Service(
                f"worker-{n + 1}",
                "worker",
                command=WORK,
                env={
                    "AM_WORKER_SERVER_URL": ",".join(urls),
                    "AM_WORKER_AUTH_TOKEN": WORKER_TOKEN,
                    "AM_WORKER_CLIENT_ID": f"worker-{n + 1}",
                    "AM_WORKER_ROLES": WORKER_ROLES,
                    "AM_WORKER_CONCURRENCY": WORKER_CONCURRENCY,
                    "AM_WORKER_HANDLER": WORKER_HANDLER,
                    "AM_WORKER_WORKSPACE": layout.workspace,
                    "AM_LOG_FORMAT": "json",
                    "AM_LOG_LEVEL": LOG_LEVEL,
                    **_LLM,
                },
                depends_on={name: HEALTHY for name in names},
            )
        )
    return services


def compose_services() -> dict[str, Service]:
    """The services of ``docker-compose.yml``: one server, two workers, in containers."""
    return build(
        Layout(
            database_url=(
                f"postgresql+asyncpg://{DATABASE}:{POSTGRES_PASSWORD.compose()}"
                f"@{POSTGRES}:5432/{DATABASE}"
            ),
            redis_url=f"redis://{REDIS}:6379/0",
            bind_host="0.0.0.0",
            server_ports=[SERVER_PORT],
            server_urls=[f"http://{SERVER}:{SERVER_PORT}"],
            workspace=CONTAINER_WORKSPACE,
            containers=True,
        )
    )


def local_services(
    *,
    database_url: str,
    redis_url: str | None,
    workspace: str,
    host: str = "127.0.0.1",
    port: int = SERVER_PORT,
    replicas: int = 1,
    workers: int = 2,
    postgres_port: int = POSTGRES_PORT,
    redis_port: int = REDIS_PORT,
) -> dict[str, Service]:
    """The same services as local processes: replicas on ``port``, ``port + 1``, …"""
    ports = [port + i for i in range(replicas)]
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return build(
        Layout(
            database_url=database_url,
            redis_url=redis_url,
            bind_host=host,
            server_ports=ports,
            server_urls=[f"http://{reach}:{p}" for p in ports],
            workspace=workspace,
            workers=workers,
            postgres_port=postgres_port,
            redis_port=redis_port,
        )
    )


__all__ = [
    "DATABASE",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "SERVER_PORT",
    "VARIABLES",
    "Layout",
    "Port",
    "Service",
    "Var",
    "build",
    "compose_services",
    "local_services",
]
