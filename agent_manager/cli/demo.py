"""``am demo``: the whole cycle on this machine, with no services and no API key.

It starts ``am serve`` on a throw-away SQLite database (with its built-in planner,
auditor and synthesizer), two ``am worker`` processes, submits a sample goal and
follows it live: the plan, the steps running in parallel on both workers, the failed
audit and its findings, the rework, the passing audit and the synthesized answer.

Without a model configured everything runs on the scripted model (not an LLM), paced
so that the run can be followed; with ``AM_LLM_*`` / ``OPENAI_API_KEY`` set, the same
command runs on that model. The children share the demo's process group, so a Ctrl-C
reaches them too; the demo still stops them in order (workers, then the server) and
removes its temporary directory however it ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

DEFAULT_GOAL = (
    "Compare three designs for a job queue (a broker, a database table, a log) and "
    "recommend one for a small team"
)
DEFAULT_PORT = 8001
ROLES = "analyst,researcher,writer"
WORKER_IDS = ("demo-worker-1", "demo-worker-2")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

out = Console()
err = Console(stderr=True, soft_wrap=True)


class DemoError(Exception):
    """The demo cannot go on; the message says why (with a log tail where it helps)."""


def llm_environment(env: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """The ``AM_LLM_*`` variables to hand on, and the real model's description when
    one is configured (``None``: the scripted model). The rule is the server's: a
    model, base URL or key means the openai provider unless AM_LLM_PROVIDER says else."""
    passed = {k: v for k, v in env.items() if k.startswith("AM_LLM_") and v.strip()}
    if env.get("OPENAI_API_KEY", "").strip():
        passed["OPENAI_API_KEY"] = env["OPENAI_API_KEY"]
    provider = passed.get("AM_LLM_PROVIDER", "auto").strip().lower()
    configured = any(
        k in passed for k in ("AM_LLM_MODEL", "AM_LLM_BASE_URL", "AM_LLM_API_KEY", "OPENAI_API_KEY")
    )
    if provider in ("scripted", "offline") or (provider == "auto" and not configured):
        return {k: v for k, v in passed.items() if k == "AM_LLM_SCENARIO"}, None
    # The server defaults the model to gpt-4o-mini; the workers need it said.
    passed.setdefault("AM_LLM_MODEL", "gpt-4o-mini")
    passed["AM_LLM_PROVIDER"] = "openai"
    passed.pop("AM_LLM_SCRIPTED_LATENCY", None)
    where = passed.get("AM_LLM_BASE_URL") or "the OpenAI API"
    return passed, f"{passed['AM_LLM_MODEL']} at {where}"


def check_model(llm_env: Mapping[str, str]) -> None:
    """Build the configured model's client once here, so that a missing key or model
    is one clear line now rather than a server that will not start."""
    import asyncio

    from agent_manager.llm import LLMConfigError, build_llm_client

    try:
        client = build_llm_client(
            provider="openai",
            base_url=llm_env.get("AM_LLM_BASE_URL"),
            model=llm_env.get("AM_LLM_MODEL"),
            api_key=llm_env.get("AM_LLM_API_KEY") or llm_env.get("OPENAI_API_KEY"),
        )
    except LLMConfigError as exc:
        raise DemoError(f"the model is not configured: {exc.message}") from None
    asyncio.run(client.aclose())


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_port(wanted: int | None) -> int:
    if wanted is not None:
        if not port_is_free(wanted):
            raise DemoError(f"port {wanted} is in use; pick another with --port")
        return wanted
    if port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Demo:
    """The server and worker processes of one demo run, and their temporary home."""

    def __init__(self, *, port: int, pace: float, llm_env: dict[str, str], real: bool) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="am-demo-"))
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token = "am_demo_" + secrets.token_urlsafe(24)
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        # Nothing from the caller's AM_* settings (their database, their tokens…)
        # leaks in: only the model's settings, and ours.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AM_")}
        self.env.pop("OPENAI_API_KEY", None)
        self.env.update(llm_env)
        if not real:
            self.env["AM_LLM_PROVIDER"] = "scripted"
            self.env["AM_LLM_SCRIPTED_LATENCY"] = str(pace)
        self.env["AM_LOG_LEVEL"] = "warning"
        self.env["AM_LOG_FORMAT"] = "text"  # the log tail an error shows is read by people

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.home / f"{name}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent_manager", *args],
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((name, proc, log))
        return proc

    def start_server(self) -> None:
        env = {
            **self.env,
            "AM_DATABASE_URL": f"sqlite+aiosqlite:///{self.home / 'demo.db'}",
            "AM_HOST": "127.0.0.1",
            "AM_PORT": str(self.port),
            "AM_ADMIN_TOKEN": self.token,
            "AM_WORKSPACE": str(self.home / "workspace"),
            "AM_AUTO_MIGRATE": "true",
            "AM_EMBEDDED_AGENTS": "true",
        }
        proc = self._spawn("server", ["serve"], env)
        self._until(lambda: self._get("/readyz") is not None, proc, "server", "come up")

    def start_workers(self) -> None:
        for agent_id in WORKER_IDS:
            self._spawn(
                agent_id,
                [
                    "worker",
                    *("--server-url", self.url, "--client-id", agent_id),
                    *("--role", ROLES, "--concurrency", "2", "--poll-wait", "10"),
                    *("--workspace", str(self.home / "workspace"), "--log-level", "warning"),
                ],
                # The token goes by the environment: command lines are public (ps).
                {**self.env, "AM_WORKER_AUTH_TOKEN": self.token},
            )
        # Submit only once both wait for work, so that both get a share of it.
        for name, proc, _ in self.procs[1:]:
            self._until(lambda n=name: n in self._agent_ids(), proc, name, "connect")

    def _get(self, path: str) -> Any:
        import httpx

        try:
            r = httpx.get(
                self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=2
            )
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    def _agent_ids(self) -> set[str]:
        return {a["id"] for a in self._get("/v1/agents") or []}

    def _until(self, ready: Any, proc: subprocess.Popen[bytes], name: str, what: str) -> None:
        log = next(p for n, _, p in self.procs if n == name)
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                raise DemoError(f"the {name} exited (code {proc.returncode}):\n{tail(log)}")
            if time.monotonic() > deadline:
                raise DemoError(f"the {name} did not {what} in {START_TIMEOUT:g}s:\n{tail(log)}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return all(proc.poll() is None for _, proc, _ in self.procs)

    def stop(self) -> None:
        """Workers first (they finish or hand back their steps), then the server."""
        workers = [(n, p) for n, p, _ in self.procs if n != "server"]
        server = [(n, p) for n, p, _ in self.procs if n == "server"]
        for group in (workers, server):
            for _, proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for _, proc in group:
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def demo(
    goal: Annotated[str, typer.Option(help="the goal to run")] = DEFAULT_GOAL,
    port: Annotated[
        int | None,
        typer.Option(help=f"the server's port (default {DEFAULT_PORT}, else a free one)"),
    ] = None,
    keep: Annotated[
        bool | None,
        typer.Option(
            "--keep/--exit",
            help="after the run, keep the server up for the dashboard until Ctrl-C "
            "(default: when the output is a terminal)",
            show_default=False,
        ),
    ] = None,
    pace: Annotated[
        float,
        typer.Option(min=0, max=30, help="seconds each scripted-model call takes"),
    ] = 2.0,
) -> None:
    """Run the whole cycle here: server, two workers, a goal — no services, no API key.

    Set AM_LLM_MODEL and OPENAI_API_KEY (or AM_LLM_BASE_URL for any OpenAI-compatible
    server) to run it on a real model instead of the scripted one.
    """
    llm_env, model = llm_environment(os.environ)
    keep = sys.stdout.isatty() if keep is None else keep
    # SIGTERM (e.g. from a supervisor) and SIGHUP (the terminal closed) take the same
    # way out as Ctrl-C: the cleanup.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    previous_hup = signal.signal(signal.SIGHUP, _raise_interrupt)
    run: Demo | None = None
    code, finished = 0, False
    try:
        if model is not None:
            check_model(llm_env)
        run = Demo(port=pick_port(port), pace=pace, llm_env=llm_env, real=model is not None)
        intro(run, model, pace)
        run.start_server()
        run.start_workers()
        err.print(f"workers {' and '.join(WORKER_IDS)} are waiting for work", style="dim")
        code = show(run, goal)
        finished = True
        farewell(run)
        if keep:
            out.print("The server stays up for the dashboard; press Ctrl-C to stop it.")
            while run.alive():
                time.sleep(0.5)
            raise DemoError("a demo process stopped by itself")
    except KeyboardInterrupt:
        code = code if finished else 130  # after the run, Ctrl-C is how keep mode ends
    except DemoError as exc:
        err.print(Text.assemble(("error: ", "bold red"), str(exc)))
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        if run is not None:
            err.print("stopping the demo's server and workers…", style="dim")
            run.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    raise typer.Exit(code)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def intro(run: Demo, model: str | None, pace: float) -> None:
    out.rule("AgentManager demo")
    out.print(f"server   {run.url}  (SQLite in {run.home})")
    out.print(f"workers  {', '.join(WORKER_IDS)}: roles {ROLES}, 2 steps at once each")
    out.print("agents   the planner, auditor and synthesizer run inside the server (embedded-…)")
    if model is None:
        out.print(
            f"model    the scripted model — [bold]not an LLM[/], a deterministic stand-in "
            f"(each call takes {pace:g}s so that you can follow along)"
        )
    else:
        out.print(f"model    {model}")


def show(run: Demo, goal: str) -> int:
    """Submit the goal and follow it live; the exit code is 0 when it completed."""
    import asyncio

    from agent_manager.cli.live import LiveTask, print_outcome
    from agent_manager.client import AgentManagerClient

    async def go() -> int:
        async with AgentManagerClient(run.url, run.token) as client:
            created = await client.submit(goal)
            out.print(Text.assemble("goal     ", (goal, "italic")))
            out.rule()
            task = await LiveTask(out).run(client, created.id)
            print_outcome(task, out)
            history = await client.get(created.id, history=True)
        by_worker: dict[str, list[str]] = {}
        for step in history.steps:
            for attempt in step.attempts:
                if attempt.agent_id in WORKER_IDS:
                    again = f" (rework {attempt.rework_round})" if attempt.rework_round else ""
                    by_worker.setdefault(attempt.agent_id, []).append(step.id + again)
        for agent_id in WORKER_IDS:
            ran = ", ".join(by_worker.get(agent_id, [])) or "nothing"
            out.print(f"{agent_id} ran: {ran}", highlight=False)
        return 0 if task.status == "completed" else 1

    from agent_manager.client import ClientError

    try:
        return asyncio.run(go())
    except ClientError as exc:
        raise DemoError(f"{exc.message}\nserver log:\n{tail(run.home / 'server.log')}") from None


def farewell(run: Demo) -> None:
    out.rule()
    out.print(f"Dashboard: [bold]{run.url}/[/]  — log in with the token [bold]{run.token}[/]")
    out.print(
        f"The CLI:   AM_SERVER_URL={run.url} AM_TOKEN={run.token} am list",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        "A real LLM: AM_LLM_MODEL=gpt-4o-mini OPENAI_API_KEY=sk-… am demo, or any "
        "OpenAI-compatible server: AM_LLM_BASE_URL=http://localhost:11434/v1 "
        "AM_LLM_MODEL=llama3.1 am demo (AM_LLM_API_KEY if it needs a key)",
        highlight=False,
    )


__all__ = ["demo", "llm_environment"]
