"""Local processes for the topology: a private PostgreSQL cluster, a Redis server, and
the ``am`` processes (migrate, server replicas, workers).

Each class starts its process, waits until it serves, and stops it; ``am stack`` and
the tests use the same classes. Every process runs in its own session, so a Ctrl-C in
the terminal reaches only ``am stack``, which then stops them in order.

PostgreSQL refuses to run as root. Run as root, the cluster's commands run as the
``postgres`` user (``runuser -u postgres``), which must be able to reach the state
directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from agent_manager.deploy.topology import DATABASE, REDIS_SERVER


class StackError(Exception):
    """Something could not start; the message says what, and how to fix it."""


class StackAborted(StackError):
    """A stop was asked for while the stack was starting."""


Abort = threading.Event | None


def check_abort(abort: Abort) -> None:
    """Raise :class:`StackAborted` once ``abort`` is set."""
    if abort is not None and abort.is_set():
        raise StackAborted("stopped while starting")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the am processes -------------------------------------------------------------------


def am_command(command: Sequence[str]) -> list[str]:
    """A topology command (``am serve``, ``python -m …``) for this interpreter."""
    head, *rest = command
    if head == "am":
        return [sys.executable, "-m", "agent_manager", *rest]
    if head == "python":
        return [sys.executable, *rest]
    return list(command)


class Process:
    """One child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C is for `am stack` alone
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def send(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.send(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def wait(self, timeout: float | None = None, hurry: Abort = None) -> int:
        """Wait for the exit; SIGKILL after ``timeout`` seconds or once ``hurry`` is set."""
        assert self.proc is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                return code
            late = deadline is not None and time.monotonic() > deadline
            if late or (hurry is not None and hurry.is_set()):
                self.kill()
                return self.proc.wait()
            time.sleep(0.05)

    def stop(self, timeout: float = 30, hurry: Abort = None) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None: never started)."""
        if self.proc is None:
            return None
        self.send(signal.SIGTERM)
        return self.wait(timeout, hurry)


def run_once(process: Process, timeout: float, abort: Abort = None) -> None:
    """Run a one-shot process to completion; StackError with its output if it fails."""
    process.start()
    deadline = time.monotonic() + timeout
    while process.alive:
        if abort is not None and abort.is_set():
            process.kill()
            check_abort(abort)
        if time.monotonic() > deadline:
            process.kill()
            raise StackError(f"{process.name} did not finish in {timeout:g}s:\n{tail(process.log)}")
        time.sleep(0.05)
    if process.returncode != 0:
        raise StackError(
            f"{process.name} failed (exit code {process.returncode}):\n{tail(process.log)}"
        )


def wait_http_ready(process: Process, url: str, timeout: float = 60, abort: Abort = None) -> None:
    """Poll ``url`` until it answers 200, while ``process`` lives."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as http:
        while True:
            check_abort(abort)
            if not process.alive:
                raise StackError(
                    f"{process.name} exited (code {process.returncode}) while starting:\n"
                    f"{tail(process.log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{process.name} not ready after {timeout:g}s:\n{tail(process.log)}"
                )
            time.sleep(0.1)


# -- PostgreSQL ---------------------------------------------------------------------------


def find_postgres_bindir(explicit: Path | None = None) -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``explicit``, then PATH, then
    ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin`` (Debian)."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))

    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.name
        return tuple(int(p) for p in number.split(".") if p.isdigit())

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates.extend(Path(p) for p in debian)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    if explicit is not None:
        raise StackError(f"{explicit}: no initdb and pg_ctl there")
    return None


class PostgresCluster:
    """A private PostgreSQL cluster in ``directory``, on ``host:port``, with trust
    authentication for the one database owner (it listens on loopback only)."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        bindir: Path | None = None,
        host: str = "127.0.0.1",
        user: str = DATABASE,
        database: str = DATABASE,
        log: Path | None = None,
    ) -> None:
        found = find_postgres_bindir(bindir)
        if found is None:
            raise StackError(
                "PostgreSQL is not installed here (no initdb/pg_ctl on PATH or in "
                "/usr/lib/postgresql/*/bin): install it, or give an existing database"
            )
        self.bindir = found
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.host = host
        self.user = user
        self.database = database
        self.log = log or directory / "postgres.log"
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """The libpq/asyncpg URL of the database."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _owner(self, argv: list[str]) -> list[str]:
        # initdb and postgres refuse root; run them as the usual system account.
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_root else argv

    def _run(self, argv: list[str], *, owner: bool = True, timeout: float = 120) -> str:
        command = self._owner(argv) if owner else argv
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the postmaster inherits this session, not ours
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"{' '.join(command)}: {exc}") from exc
        if done.returncode != 0:
            raise StackError(
                f"{Path(argv[0]).name} failed (exit code {done.returncode}):\n"
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def _tool(self, name: str) -> str:
        return str(self.bindir / name)

    def init(self) -> bool:
        """Create the cluster unless it exists; True when it was created."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if self._as_root:
            if shutil.which("runuser") is None:
                raise StackError("running as root needs runuser (util-linux) to start PostgreSQL")
            shutil.chown(self.directory, "postgres")
            shutil.chown(self.log, "postgres")
            probe = ["runuser", "-u", "postgres", "--", "test", "-w", str(self.directory)]
            if subprocess.run(probe, check=False).returncode != 0:
                raise StackError(
                    f"PostgreSQL refuses to run as root, and the postgres user cannot reach "
                    f"{self.directory}: choose a state directory it can reach (e.g. under /tmp)"
                )
        if (self.data / "PG_VERSION").exists():
            return False
        self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )
        return True

    @property
    def running(self) -> bool:
        status = subprocess.run(
            self._owner([self._tool("pg_ctl"), "status", "-D", str(self.data)]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def start(self) -> None:
        """Start the cluster (``pg_ctl start -w``) and create the database if needed."""
        options = f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories=''"
        self._run(
            [
                self._tool("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self._create_database()

    def _create_database(self) -> None:
        argv = [self._tool("createdb"), "-h", self.host, "-p", str(self.port)]
        try:
            self._run([*argv, "-U", self.user, self.database], owner=False)
        except StackError as exc:
            if "already exists" not in str(exc):
                raise

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``, waiting until it is down (nothing if not running)."""
        if not self.running:
            return
        self._run(
            [self._tool("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"]
        )

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


# -- Redis ----------------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` without persistence on ``host:port``."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed here: install Redis, or run without it")
        self.directory = directory
        self.port = port
        self.host = host
        argv = [binary, *REDIS_SERVER[1:], "--port", str(port), "--bind", host]
        argv += ["--dir", str(directory), "--daemonize", "no", "--logfile", ""]
        self.process = Process(
            "redis",
            argv,
            env=env if env is not None else os.environ,
            cwd=directory,
            log=log or directory / "redis.log",
        )

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 30, abort: Abort = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process.start()
        deadline = time.monotonic() + timeout
        while not self.ping():
            check_abort(abort)
            if not self.process.alive:
                raise StackError(
                    f"redis-server exited (code {self.process.returncode}):\n"
                    f"{tail(self.process.log)}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"redis-server not ready after {timeout:g}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        self.process.stop(timeout)


# -- following the logs -------------------------------------------------------------------


class LogFollower(threading.Thread):
    """Prints the new lines of each service's log, prefixed with its name (like
    ``docker compose up``)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(name="log-follower", daemon=True)
        self.write = write
        self._files: dict[str, tuple[Path, int]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._width = 8

    def add(self, name: str, path: Path, from_start: bool = False) -> None:
        offset = 0 if from_start or not path.exists() else path.stat().st_size
        with self._lock:
            self._files[name] = (path, offset)
            self._width = max(self._width, len(name))

    def run(self) -> None:
        while not self._closing.wait(0.2):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            files = dict(self._files)
        for name, (path, offset) in files.items():
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            complete = chunk.rfind(b"\n") + 1
            if not complete:
                continue
            for line in chunk[:complete].decode(errors="replace").splitlines():
                self.write(f"{name:<{self._width}} | {line}")
            with self._lock:
                self._files[name] = (path, offset + complete)

    def close(self) -> None:
        self._closing.set()
        if self.is_alive():
            self.join(timeout=5)


__all__ = [
    "LogFollower",
    "PostgresCluster",
    "Process",
    "RedisServer",
    "StackAborted",
    "StackError",
    "am_command",
    "check_abort",
    "find_postgres_bindir",
    "pid_alive",
    "port_in_use",
    "run_once",
    "tail",
    "wait_http_ready",
]
