"""``am stack``: the production topology as local processes.

It starts, in the compose file's order, a private PostgreSQL (or uses a given
database), a Redis (or a given one), the one-shot ``migrate`` step, N server replicas
and the workers, with the environment :mod:`agent_manager.deploy.topology` gives
each; then it waits, and on Ctrl-C/SIGTERM stops them in reverse order: workers first
(they finish or hand back their steps), then the servers, Redis and PostgreSQL.

Everything lives in the state directory: the cluster, the shared workspace, one log
per service (``logs/<service>.log``) and ``stack.json`` (what runs, with pids and
URLs) while the stack is up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values
from sqlalchemy.engine import make_url

from agent_manager.deploy import topology
from agent_manager.deploy.local import (
    Abort,
    LogFollower,
    PostgresCluster,
    Process,
    RedisServer,
    StackAborted,
    StackError,
    am_command,
    check_abort,
    pid_alive,
    port_in_use,
    run_once,
    tail,
    wait_http_ready,
)
from agent_manager.deploy.topology import Service, Var

#: Seconds a worker gets on SIGTERM before it is killed (its own grace is 30 s).
WORKER_STOP_TIMEOUT = 40.0
SERVER_STOP_TIMEOUT = 40.0


@dataclass
class StackOptions:
    """What ``am stack`` starts, and where."""

    state_dir: Path = Path(".am-stack")
    replicas: int = 1
    workers: int = 2
    host: str = "127.0.0.1"
    port: int = topology.SERVER_PORT
    postgres_port: int = topology.POSTGRES_PORT
    redis_port: int = topology.REDIS_PORT
    database_url: str | None = None  # None: a private cluster in the state directory
    redis_url: str | None = None  # None: a private redis-server (unless redis is False)
    redis: bool = True
    postgres_bin: Path | None = None
    env_file: Path | None = Path(".env")
    values: Mapping[str, str] = field(default_factory=dict)  # topology variables
    follow: bool = True  # print the services' logs as they come


class Values:
    """The topology's variables: flags, then the environment, then ``.env``, then the
    defaults. Tokens nobody set are made up once and kept in ``store`` (readable by
    the owner only), so that a restarted stack keeps them."""

    def __init__(
        self,
        flags: Mapping[str, str],
        environ: Mapping[str, str],
        env_file: Path | None,
        store: Path | None = None,
    ) -> None:
        self.flags = dict(flags)
        self.environ = environ
        self.file = _read_env_file(env_file)
        self.store = store
        self.generated = _read_env_file(store)

    def get(self, var: Var) -> str:
        # Like docker compose's ${NAME:-default}: an empty value counts as unset.
        for source in (self.flags, self.environ, self.file, self.generated):
            if source.get(var.name):
                return source[var.name]
        if var.default is not None:
            return var.default
        if not var.generated:
            raise StackError(f"{var.name} is not set: {var.help}")
        from agent_manager.core.auth import new_secret

        self.generated[var.name] = new_secret()
        if self.store is not None:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            self.store.touch(mode=0o600)
            lines = "".join(f"{k}={v}\n" for k, v in self.generated.items())
            self.store.write_text("# made up by am stack; set them in .env to choose\n" + lines)
        return self.generated[var.name]

    def chosen(self, var: Var) -> bool:
        """Whether someone set ``var`` (rather than am stack making it up)."""
        return any(source.get(var.name) for source in (self.flags, self.environ, self.file))


def _read_env_file(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v}


class Stack:
    """The local processes of the topology. ``start()``/``stop()`` for tests; ``run()``
    for the command (start, wait for a signal, stop)."""

    def __init__(
        self,
        options: StackOptions,
        *,
        environ: Mapping[str, str] | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.environ = dict(os.environ if environ is None else environ)
        self.write = write or (lambda line: print(line, flush=True))
        self.state_dir = options.state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.values = Values(
            options.values, self.environ, options.env_file, self.state_dir / "secrets.env"
        )
        self.postgres: PostgresCluster | None = None
        self.redis: RedisServer | None = None
        self.servers: list[Process] = []
        self.workers: list[Process] = []
        self.services: dict[str, Service] = {}
        self.follower: LogFollower | None = None
        self.hurry = threading.Event()  # a second Ctrl-C: kill instead of waiting
        self._reported: set[str] = set()
        self._stopping = False
        self._wrote_state = False

    # -- what runs where ------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        if self.options.database_url:
            return self.options.database_url
        user, db = topology.DATABASE, topology.DATABASE
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.options.postgres_port}/{db}"

    @property
    def redis_url(self) -> str | None:
        if not self.options.redis:
            return None
        return self.options.redis_url or f"redis://127.0.0.1:{self.options.redis_port}/0"

    @property
    def server_urls(self) -> list[str]:
        """Every replica's URL, as the workers reach it."""
        return [s.url for s in self.services.values() if s.kind == "server" and s.url]

    @property
    def admin_token(self) -> str:
        return self.values.get(topology.ADMIN_TOKEN)

    def plan(self) -> dict[str, Service]:
        """The services this stack runs, from the topology."""
        return topology.local_services(
            database_url=self.database_url,
            redis_url=self.redis_url,
            workspace=str(self.state_dir / "workspace"),
            host=self.options.host,
            port=self.options.port,
            replicas=self.options.replicas,
            workers=self.options.workers,
            postgres_port=self.options.postgres_port,
            redis_port=self.options.redis_port,
        )

    def env_of(self, service: Service) -> dict[str, str]:
        resolved = {
            k: self.values.get(v) if isinstance(v, Var) else v for k, v in service.env.items()
        }
        return {**self.environ, **resolved}

    # -- start and stop ---------------------------------------------------------------------

    def start(self, abort: Abort = None) -> None:
        """Start every service in order; on failure stop what started and raise."""
        if self.options.replicas < 1 or self.options.workers < 0:
            raise StackError("--replicas must be at least 1 and --workers at least 0")
        self.services = self.plan()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "workspace").mkdir(exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.options.follow:
            self.follower = LogFollower(self.write)
            self.follower.start()
        try:
            self._stop_leftovers()
            self._check_ports()
            for service in self.services.values():
                check_abort(abort)
                self._start_service(service, abort)
            self._wait_workers_seen(abort)
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _start_service(self, service: Service, abort: Abort) -> None:
        if service.kind == "postgres":
            if not self.options.database_url:
                self._start_postgres()
        elif service.kind == "redis":
            if not self.options.redis_url:
                self.redis = RedisServer(
                    self.state_dir / "redis",
                    self.options.redis_port,
                    log=self.logs / "redis.log",
                    env=self.environ,
                )
                self._follow("redis", self.redis.process.log)
                self.redis.start(abort=abort)
        elif service.kind == "migrate":
            process = self._process(service)
            run_once(process, timeout=120, abort=abort)
        elif service.kind == "server":
            # Replicas start together; the workers wait for all of them (below).
            self.servers.append(self._process(service).start())
            if len(self.servers) == self.options.replicas:
                for url, process in zip(self.server_urls, self.servers, strict=True):
                    wait_http_ready(process, url + "/readyz", abort=abort)
        elif service.kind == "worker":
            self.workers.append(self._process(service).start())

    def _process(self, service: Service) -> Process:
        log = self.logs / f"{service.name}.log"
        self._follow(service.name, log)
        return Process(
            service.name,
            am_command(service.command),
            env=self.env_of(service),
            cwd=self.state_dir,
            log=log,
        )

    def _follow(self, name: str, log: Path) -> None:
        if self.follower is not None:
            self.follower.add(name, log)

    def _start_postgres(self) -> None:
        directory = self.state_dir / "postgres"
        self.postgres = PostgresCluster(
            directory,
            self.options.postgres_port,
            bindir=self.options.postgres_bin,
            log=self.logs / "postgres.log",
        )
        self._follow("postgres", self.postgres.log)
        if self.postgres.init():
            self.write(f"created a PostgreSQL cluster in {self.postgres.data}")
        elif self.postgres.running:  # left behind by a stack that was killed
            self.write(f"stopping the PostgreSQL left running in {self.postgres.data}")
            self.postgres.stop()
        self.postgres.start()

    def _check_ports(self) -> None:
        wanted = [
            (f"server replica {i + 1}", self.options.port + i, "--port")
            for i in range(self.options.replicas)
        ]
        if not self.options.database_url:
            wanted.append(("PostgreSQL", self.options.postgres_port, "--postgres-port"))
        if self.options.redis and not self.options.redis_url:
            wanted.append(("Redis", self.options.redis_port, "--redis-port"))
        for what, port, flag in wanted:
            if port_in_use(port):
                raise StackError(
                    f"port {port} (for {what}) is in use: stop what uses it, or choose "
                    f"another with {flag}"
                )

    def _wait_workers_seen(self, abort: Abort, timeout: float = 60) -> None:
        """Until every worker has asked the servers for work (so it is connected)."""
        if not self.workers:
            return
        url = self.server_urls[0] + "/v1/agents"
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5, headers=headers) as http:
            while True:
                check_abort(abort)
                for worker in self.workers:
                    if not worker.alive:
                        raise StackError(
                            f"{worker.name} exited (code {worker.returncode}) while "
                            f"starting:\n{tail(worker.log)}"
                        )
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    response = http.get(url)
                    if response.status_code == 200:
                        seen = {agent["id"] for agent in response.json()}
                        if all(w.name in seen for w in self.workers):
                            return
                if time.monotonic() > deadline:
                    names = ", ".join(w.name for w in self.workers)
                    raise StackError(f"the workers ({names}) did not connect in {timeout:g}s")
                time.sleep(0.3)

    def stop(self) -> None:
        """Stop everything that runs, workers first; safe to call more than once."""
        self._stopping = True
        try:
            for group, timeout in (
                (self.workers, WORKER_STOP_TIMEOUT),
                (self.servers, SERVER_STOP_TIMEOUT),
            ):
                for process in group:
                    process.send(signal.SIGTERM)
                for process in group:
                    if process.proc is not None:
                        process.wait(timeout, self.hurry)
            if self.redis is not None:
                self.redis.stop()
            if self.postgres is not None:
                self.postgres.stop("immediate" if self.hurry.is_set() else "fast")
        finally:
            if self._wrote_state:
                (self.state_dir / "stack.json").unlink(missing_ok=True)
                self._wrote_state = False
            if self.follower is not None:
                self.follower.close()

    # -- state for the user, the tests and the next run -------------------------------------

    def pids(self) -> dict[str, int]:
        """The pid of every process that was started (PostgreSQL's postmaster included)."""
        pids = {p.name: p.pid for p in [*self.servers, *self.workers] if p.pid is not None}
        if self.redis is not None and self.redis.pid is not None:
            pids["redis"] = self.redis.pid
        if self.postgres is not None and (pid := self.postgres.pid) is not None:
            pids["postgres"] = pid
        return pids

    def _write_state(self) -> None:
        state: dict[str, Any] = {
            "pid": os.getpid(),
            "database_url": _shown(self.database_url),
            "redis_url": self.redis_url,
            "servers": self.server_urls,
            "services": self.pids(),
            "logs": str(self.logs),
        }
        (self.state_dir / "stack.json").write_text(json.dumps(state, indent=2) + "\n")
        self._wrote_state = True

    def _stop_leftovers(self) -> None:
        """Processes of an earlier stack in this state directory that was killed."""
        path = self.state_dir / "stack.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(state.get("pid"), int) and pid_alive(state["pid"]):
            raise StackError(
                f"another am stack (pid {state['pid']}) runs in {self.state_dir}: stop it "
                "first, or choose another --state-dir"
            )
        for name, pid in state.get("services", {}).items():
            marker = b"redis-server" if name == "redis" else b"agent_manager"
            if name != "postgres" and _is_ours(pid, marker):
                self.write(f"stopping {name} (pid {pid}) left running by an earlier stack")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        path.unlink()

    def summary(self) -> list[str]:
        """Where everything is, for the terminal."""
        lines = [f"AgentManager stack in {self.state_dir}"]
        database = _shown(self.database_url)
        if self.postgres is not None:
            database += f"   (private cluster {self.postgres.data})"
        lines.append(f"  {'postgres':<16} {database}")
        if self.redis_url is not None:
            lines.append(f"  {'redis':<16} {self.redis_url}")
        for url, process in zip(self.server_urls, self.servers, strict=True):
            lines.append(f"  {process.name:<16} {url}   pid {process.pid}")
        for worker in self.workers:
            env = worker.env
            lines.append(
                f"  {worker.name:<16} roles {env['AM_WORKER_ROLES']} -> "
                f"{env['AM_WORKER_SERVER_URL']}   pid {worker.pid}"
            )
        note = ""
        if not self.values.chosen(topology.ADMIN_TOKEN):
            note = f"   (made up, kept in {self.values.store}; set AM_ADMIN_TOKEN to choose)"
        lines.append(f"  {'admin token':<16} {self.admin_token}{note}")
        lines.append(f"  {'logs':<16} {self.logs}/<service>.log")
        lines.append("Ctrl-C stops everything.")
        return lines

    def watch(self) -> None:
        """Report, once each, processes that ended without being asked to."""
        if self._stopping:
            return
        members: list[tuple[str, Process]] = [(p.name, p) for p in [*self.servers, *self.workers]]
        if self.redis is not None:
            members.append(("redis", self.redis.process))
        for name, process in members:
            if name not in self._reported and process.proc is not None and not process.alive:
                self._reported.add(name)
                self.write(f"{name} exited (code {process.returncode}); see {process.log}")

    def run(self) -> int:
        """Start, print where everything is, wait for Ctrl-C/SIGTERM, stop. The exit code."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():
                self.hurry.set()
                self.write("stopping now (killing what is left)")
            else:
                self.write(f"{signal.Signals(signum).name}: stopping the stack")
            stop.set()

        handled = [signal.SIGINT, signal.SIGTERM]
        if hasattr(signal, "SIGHUP"):
            handled.append(signal.SIGHUP)
        previous = {s: signal.signal(s, on_signal) for s in handled}
        try:
            try:
                self.start(abort=stop)
            except StackAborted:
                return 0
            except StackError as exc:
                self.write(f"error: {exc}")
                return 1
            for line in self.summary():
                self.write(line)
            while not stop.wait(0.5):
                self.watch()
            self.stop()
            self.write("stack stopped")
            return 0
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _shown(url: str) -> str:
    """A database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _is_ours(pid: Any, marker: bytes) -> bool:
    """A live process whose command line holds ``marker`` (Linux; elsewhere: no)."""
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


__all__ = ["Stack", "StackOptions", "Values"]
