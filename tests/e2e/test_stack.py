"""The deployment: ``docker-compose.yml``, ``Dockerfile`` and ``.env.example`` agree
with :mod:`agent_manager.deploy.topology`, and ``scripts/stack`` (``am stack``) runs
that topology as local processes, completes a task, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dotenv import dotenv_values

from agent_manager.deploy import topology
from agent_manager.deploy.local import PostgresCluster, StackError
from agent_manager.deploy.stack import Values
from agent_manager.deploy.topology import Service, compose_services, local_services
from tests.server import ADMIN_TOKEN
from tests.services import (
    free_port,
    free_ports,
    process_gone,
    require_postgres_binaries,
    require_redis_server,
    scratch_dir,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SEED_SERVICES = {"agent-manager", "postgres", "redis", "worker-1", "worker-2"}


def compose_file() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_the_seed_s_five_services_and_a_one_shot_migrate() -> None:
    services = compose_file()["services"]
    topo = compose_services()
    assert list(services) == list(topo)  # same services, in start order
    long_running = {name for name, service in topo.items() if not service.one_shot}
    assert long_running == SEED_SERVICES
    assert services["migrate"]["restart"] == "no"
    for name in long_running:
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("postgres", "redis", "agent-manager"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("worker-1", "worker-2", "migrate"):
        assert services[name]["healthcheck"] == {"disable": True}, name


@pytest.mark.parametrize("name", list(compose_services()))
def test_compose_and_topology_agree(name: str) -> None:
    spec = compose_file()["services"][name]
    service: Service = compose_services()[name]
    assert spec.get("environment", {}) == service.compose_env()
    assert spec.get("ports", []) == [port.compose() for port in service.ports]
    assert spec.get("command") == (list(service.command) or None)
    depends = {dep: cond["condition"] for dep, cond in spec.get("depends_on", {}).items()}
    assert depends == dict(service.depends_on)


def test_the_seed_s_ports() -> None:
    ports = {name: [p.compose() for p in s.ports] for name, s in compose_services().items()}
    assert ports["agent-manager"] == ["8001:8001"]
    assert ports["postgres"] == ["127.0.0.1:5433:5432"]
    assert ports["redis"] == ["127.0.0.1:6380:6379"]
    server = compose_services()["agent-manager"].env
    assert server["AM_REDIS_URL"] == "redis://redis:6379/0"
    assert server["AM_HOST"] == "0.0.0.0" and server["AM_LOG_FORMAT"] == "json"
    for worker in ("worker-1", "worker-2"):
        env = compose_services()[worker].env
        assert env["AM_WORKER_SERVER_URL"] == "http://agent-manager:8001"
        assert env["AM_WORKER_CLIENT_ID"] == worker


def test_am_stack_runs_the_compose_services_with_the_same_variables() -> None:
    compose = compose_services()
    local = local_services(
        database_url="postgresql+asyncpg://agent_manager@127.0.0.1:5433/agent_manager",
        redis_url="redis://127.0.0.1:6380/0",
        workspace="/tmp/workspace",
    )
    assert list(local) == list(compose)
    for name, service in compose.items():
        assert list(local[name].env) == list(service.env), name
        assert local[name].command == service.command
        assert local[name].depends_on == service.depends_on
        # What the operator chooses is the same variable in both.
        assert local[name].variables() == service.variables()
    ports = {name: [p.host for p in s.ports] for name, s in local.items()}
    assert ports == {name: [p.host for p in s.ports] for name, s in compose.items()}

    replicas = local_services(
        database_url="x", redis_url=None, workspace="/w", port=9000, replicas=3, workers=2
    )
    servers = [s for s in replicas.values() if s.kind == "server"]
    assert [s.env["AM_PORT"] for s in servers] == ["9000", "9001", "9002"]
    urls = [s.env["AM_WORKER_SERVER_URL"] for s in replicas.values() if s.kind == "worker"]
    assert urls == [
        "http://127.0.0.1:9000,http://127.0.0.1:9001,http://127.0.0.1:9002",
        "http://127.0.0.1:9001,http://127.0.0.1:9002,http://127.0.0.1:9000",
    ]
    assert "redis" not in replicas
    assert all("AM_REDIS_URL" not in s.env for s in servers)


def test_env_example_documents_every_variable() -> None:
    assigned = dotenv_values(ENV_EXAMPLE)
    assert list(assigned) == [var.name for var in topology.VARIABLES]
    for var in topology.VARIABLES:
        # Secrets are left blank (compose refuses to start without them); the rest
        # show their defaults.
        assert assigned[var.name] == ("" if var.default is None else var.default), var.name
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert referenced == set(assigned)
    text = ENV_EXAMPLE.read_text()
    for service in compose_services().values():
        for name in service.env:
            assert name in text, f"{name} ({service.name}) is not mentioned in .env.example"


def compose_env_with_example_values(service: Service) -> dict[str, str]:
    """The environment docker compose gives ``service`` with ``.env.example`` as the
    ``.env``, its blank secrets filled in."""
    values = {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}
    values.update({v.name: "secret0123" for v in topology.VARIABLES if v.default is None})

    def interpolate(text: str) -> str:
        return re.sub(r"\$\{(\w+)(?::[-?][^}]*)?\}", lambda m: values.get(m.group(1)) or "", text)

    return {name: interpolate(value) for name, value in service.compose_env().items()}


def test_the_containers_settings_load_as_intended(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_manager.client.config import load_config
    from agent_manager.config import Settings

    services = compose_services()
    for name in [n for n in os.environ if n.startswith("AM_") or n == "OPENAI_API_KEY"]:
        monkeypatch.delenv(name)
    for name, value in compose_env_with_example_values(services["agent-manager"]).items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.host == "0.0.0.0" and settings.port == 8001
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.database_url.startswith("postgresql+asyncpg://agent_manager:secret0123@")
    assert settings.auto_migrate is False and settings.log_format == "json"
    # The blank model settings mean "unset", not an empty URL or model name.
    assert settings.llm_base_url is None and settings.llm_model is None
    assert settings.resolved_llm_provider() == "scripted"

    worker_env = compose_env_with_example_values(services["worker-1"])
    config = load_config(None, must_exist=False, env=worker_env)
    assert config.server_url == ["http://agent-manager:8001"]
    assert config.client_id == "worker-1"
    assert config.roles == ["analyst", "researcher", "writer"]
    assert config.handler is None and config.concurrency == 2
    assert config.llm.resolved_provider() == "scripted"


def test_dockerfile_and_dockerignore() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^EXPOSE 8001$", text, re.M)
    assert "HEALTHCHECK" in text and "agent_manager.deploy.healthcheck" in text
    assert re.search(r'^CMD \["am", "serve"\]$', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".env", ".venv", ".git", "tests"):
        assert path in ignored


def compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or the standalone ``docker-compose``."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    """The compose tool itself parses and checks the file (no engine needed). CI
    installs Debian's docker-compose when the plugin is missing, so this never skips
    there; elsewhere it says why."""
    compose = compose_command()
    if compose is None:
        pytest.skip("neither 'docker compose' nor 'docker-compose' is installed here")
    env = tmp_path / ".env"
    values = {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}
    values.update({v.name: "secret0123" for v in topology.VARIABLES if v.default is None})
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    done = subprocess.run(
        [*compose, "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_the_healthcheck_module(tmp_path: Path) -> None:
    closed = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent_manager.deploy.healthcheck",
            f"http://127.0.0.1:{free_port()}/healthz",
        ],
        cwd=ROOT,
    )
    assert closed.returncode == 1


def test_stack_values_come_from_flags_environment_env_file_then_defaults(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AM_WORKER_ROLES=from-file\nAM_LOG_LEVEL=debug\nAM_LLM_MODEL=\n")
    store = tmp_path / "state" / "secrets.env"
    environ = {"AM_WORKER_ROLES": "from-env", "AM_LOG_LEVEL": "", "AM_WORKER_CONCURRENCY": "7"}
    values = Values({"AM_WORKER_ROLES": "from-flag"}, environ, env_file, store)
    assert values.get(topology.WORKER_ROLES) == "from-flag"
    assert values.get(topology.WORKER_CONCURRENCY) == "7"
    assert values.get(topology.LOG_LEVEL) == "debug"  # an empty variable counts as unset
    assert values.get(topology.LLM_MODEL) == ""  # the default
    with pytest.raises(StackError, match="POSTGRES_PASSWORD"):
        values.get(topology.POSTGRES_PASSWORD)

    token = values.get(topology.ADMIN_TOKEN)  # made up, and kept for the next run
    assert token.startswith("am_") and not values.chosen(topology.ADMIN_TOKEN)
    assert store.stat().st_mode & 0o077 == 0
    again = Values({}, {}, None, store)
    assert again.get(topology.ADMIN_TOKEN) == token
    assert Values({}, {"AM_ADMIN_TOKEN": "mine"}, None, store).get(topology.ADMIN_TOKEN) == "mine"


# -- am stack, as a user runs it ------------------------------------------------------


def wait_for(
    check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if proc.poll() is not None:
            raise AssertionError(f"am stack exited ({proc.returncode}):\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{log.read_text()}")


def stop_for_good(proc: subprocess.Popen[bytes], state: Path) -> None:
    """After a failure: stop the stack as a user would, and then anything it left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    state_file = state / "stack.json"
    if state_file.exists():
        for name, pid in json.loads(state_file.read_text())["services"].items():
            if name != "postgres" and not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
    if (state / "postgres" / "data" / "postmaster.pid").exists():
        PostgresCluster(state / "postgres", 0).stop("immediate")


@pytest.mark.postgres
def test_am_stack_runs_a_task_and_stops_without_leftovers(tmp_path: Path) -> None:
    require_postgres_binaries()
    require_redis_server()
    with scratch_dir("am-stack-") as state:
        port, _ = free_ports(2, consecutive=True)
        postgres_port, redis_port = free_ports(2)
        output = tmp_path / "stack.out"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AM_TEST_HANDLER_LOG": str(tmp_path / "steps.log"),
            "AM_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        argv = [str(ROOT / "scripts" / "stack"), "--replicas", "2", "--port", str(port)]
        argv += ["--postgres-port", str(postgres_port), "--redis-port", str(redis_port)]
        argv += ["--state-dir", str(state), "--env-file", str(tmp_path / "absent.env")]
        argv += ["--roles", "noop", "--handler", "tests.e2e.handlers:run"]
        with output.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=out)
        try:
            state_file = state / "stack.json"
            wait_for(state_file.exists, 120, "the stack to start", proc, output)
            started = json.loads(state_file.read_text())
            pids: dict[str, int] = started["services"]
            assert set(pids) == {
                "postgres",
                "redis",
                "agent-manager-1",
                "agent-manager-2",
                "worker-1",
                "worker-2",
            }
            urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
            assert started["servers"] == urls
            assert started["redis_url"] == f"redis://127.0.0.1:{redis_port}/0"

            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            with httpx.Client(base_url=urls[1], headers=headers, timeout=30) as http:
                plan = [
                    {"id": "a", "role": "noop", "instruction": "noop"},
                    {"id": "b", "role": "noop", "instruction": "noop", "depends_on": ["a"]},
                    {"id": "c", "role": "noop", "instruction": "noop", "depends_on": ["a"]},
                    {"id": "d", "role": "noop", "instruction": "noop", "depends_on": ["b", "c"]},
                ]
                body = {
                    "goal": "a diamond through am stack",
                    "steps": plan,
                    "options": {"audit": False, "synthesize": False},
                }
                created = http.post("/v1/tasks", json=body)
                assert created.status_code in (200, 201), created.text
                task_id = created.json()["id"]

                def finished() -> dict[str, Any] | None:
                    task = http.get(f"/v1/tasks/{task_id}").json()
                    return task if task["status"] in ("completed", "failed") else None

                task = wait_for(finished, 60, "the task", proc, output)
                assert task["status"] == "completed"
                assert [s["status"] for s in task["steps"]] == ["done"] * 4
                agents = {a["id"] for a in http.get("/v1/agents").json()}
                assert {"worker-1", "worker-2"} <= agents
                # The workers' token (made up and kept by am stack) may only work.
                worker_token = dotenv_values(state / "secrets.env")["AM_WORKER_AUTH_TOKEN"]
                refused = http.post(
                    "/v1/tasks", json=body, headers={"Authorization": f"Bearer {worker_token}"}
                )
                assert refused.status_code == 403, refused.text

            healthy = subprocess.run(
                [sys.executable, "-m", "agent_manager.deploy.healthcheck", urls[0] + "/healthz"]
            )
            assert healthy.returncode == 0

            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(timeout=90) == 0, output.read_text()
        finally:
            stop_for_good(proc, state)
        text = output.read_text()
        assert "Ctrl-C stops everything." in text
        assert text.rstrip().endswith("stack stopped"), text[-2000:]
        assert [name for name, pid in pids.items() if not process_gone(pid)] == []
        assert not state_file.exists()
