"""The worker's configuration: file, then AM_WORKER_* variables, then flags; and every
bad-config message, which names where the value came from, the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent_manager.cli.main import app
from agent_manager.client import ConfigError, import_handler, load_config
from agent_manager.client.app import build_llm
from agent_manager.client.config import LLMConfig

TOKEN_FIX = "create one with `am token create --scope work --role analyst`"


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "mcp_client_config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def problems(path: Path | None, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=kwargs.pop("env", {}), **kwargs)
    return caught.value.problems


def test_a_full_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "client_id": "worker-7",
            "server_url": ["http://a:8001", "http://b:8001/"],
            "auth_token": "am_secret",
            "polling_interval_sec": 5,
            "roles": ["analyst", "writer"],
            "workspace": "shared",
            "concurrency": 4,
            "handler": "my_handlers:run",
            "llm": {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-1", "timeout": 9},
        },
    )
    config = load_config(path, env={})
    assert config.client_id == "worker-7"
    assert config.server_url == ["http://a:8001", "http://b:8001/"]
    assert config.auth_token.get_secret_value() == "am_secret"
    assert config.polling_interval_sec == 5 and config.concurrency == 4
    assert config.roles == ["analyst", "writer"] and config.workspace == Path("shared")
    assert config.handler == "my_handlers:run"
    assert config.llm.model == "gpt-4o-mini" and config.llm.timeout == 9
    assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == "sk-1"


def test_the_seed_contract_alone_is_enough(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "client_id": "w1",
            "server_url": "http://127.0.0.1:8001",
            "auth_token": "t",
            "polling_interval_sec": 2,
        },
    )
    config = load_config(path, env={})
    assert config.server_url == ["http://127.0.0.1:8001"]
    assert config.roles == [] and config.concurrency == 1 and config.handler is None
    assert config.llm.resolved_provider() == "scripted"


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, {"auth_token": "from-file", "concurrency": 2, "roles": ["analyst"]})
    env = {
        "AM_WORKER_AUTH_TOKEN": "from-env",
        "AM_WORKER_CONCURRENCY": "3",
        "AM_WORKER_ROLES": "researcher, writer",
        "AM_WORKER_SERVER_URL": "http://a:1,http://b:2",
        "AM_WORKER_CLIENT_ID": "env-id",
        "AM_LLM_MODEL": "llama3.1",
        "AM_LLM_BASE_URL": "http://localhost:11434/v1",
    }
    config = load_config(path, env=env)
    assert config.auth_token.get_secret_value() == "from-env"
    assert config.concurrency == 3 and config.roles == ["researcher", "writer"]
    assert config.server_url == ["http://a:1", "http://b:2"] and config.client_id == "env-id"
    assert config.llm.model == "llama3.1" and config.llm.resolved_provider() == "openai"

    flagged = load_config(
        path, env=env, flags={"concurrency": 8, "roles": ["auditor"], "auth_token": None}
    )
    assert flagged.concurrency == 8 and flagged.roles == ["auditor"]
    assert flagged.auth_token.get_secret_value() == "from-env"  # None flags change nothing


def test_llm_keys_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, {"auth_token": "t", "llm": {"model": "m"}})
    assert load_config(path, env={"OPENAI_API_KEY": "sk-env"}).llm.api_key is not None
    both = load_config(path, env={"OPENAI_API_KEY": "sk-env", "AM_LLM_API_KEY": "sk-am"})
    assert both.llm.api_key is not None and both.llm.api_key.get_secret_value() == "sk-am"
    own = write(tmp_path, {"auth_token": "t", "llm": {"model": "m", "api_key": "sk-file"}})
    kept = load_config(own, env={"OPENAI_API_KEY": "sk-env"})
    assert kept.llm.api_key is not None and kept.llm.api_key.get_secret_value() == "sk-file"
    assert kept.llm.model == "m"


def test_the_default_file_may_be_absent_when_the_environment_has_a_token(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mcp_client_config.json"
    config = load_config(path, must_exist=False, env={"AM_WORKER_AUTH_TOKEN": "t"})
    assert config.auth_token.get_secret_value() == "t"
    [problem] = problems(path, must_exist=False)
    assert problem.startswith(f"{path}: not found, and no auth_token")
    assert TOKEN_FIX in problem and "mcp_client_config.example.json" in problem


def test_a_missing_file_given_explicitly(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.json"
    [problem] = problems(path)
    assert problem.startswith(f"{path}: no such file")
    assert "mcp_client_config.example.json" in problem and "--config" in problem


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"auth_token": "t",}', "not valid JSON: Expecting property name"),
        ('{"auth_token": "t"', "not valid JSON"),
        ("", "not valid JSON: Expecting value at line 1, column 1"),
        ('["auth_token"]', "must hold a JSON object"),
    ],
)
def test_a_file_that_is_not_a_json_object(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, content)
    [problem] = problems(path)
    assert problem.startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, f"auth_token is missing — {TOKEN_FIX}"),
        ({"auth_token": "  "}, "auth_token: is empty"),
        ({"auth_token": "am_... (paste)"}, "auth_token: contains spaces"),
        ({"roles": "analyst"}, None),  # a comma-separated string is fine
        (
            {"roles": 5},
            'roles: Input should be a valid list — give a list of role names, e.g. ["analyst"',
        ),
        ({"roles": {"analyst": True}}, "roles: Input should be a valid list"),
        ({"roles": ["analyst", 3]}, "roles[1]: Input should be a valid string"),
        ({"roles": ["two words"]}, "roles: 'two words' is not a role name"),
        (
            {"concurrency": 0},
            "concurrency: Input should be greater than or equal to 1 — give a whole number from 1",
        ),
        ({"concurrency": 101}, "concurrency: Input should be less than or equal to 100"),
        ({"concurrency": 2.5}, "concurrency: Input should be a valid integer"),
        ({"concurrency": "four"}, "concurrency: Input should be a valid integer"),
        (
            {"polling_interval_sec": -1},
            "polling_interval_sec: Input should be greater than or equal to 0",
        ),
        (
            {"server_url": "localhost:8001"},
            "server_url: 'localhost:8001' is not an http:// or https:// URL — give the server's",
        ),
        ({"server_url": []}, "server_url: List should have at least 1 item"),
        ({"client_id": "my worker"}, "client_id: 'my worker' is not allowed — use letters, digits"),
        (
            {"handler": "handlers.run"},
            "handler: 'handlers.run' is not allowed — give \"module:function\"",
        ),
        (
            {"concurency": 2},
            "unknown setting 'concurency' — remove it or fix its spelling (known: client_id,",
        ),
        ({"llm": "gpt-4o"}, "llm: Input should be a valid dictionary"),
        (
            {"llm": {"provider": "anthropic"}},
            "llm.provider: Input should be 'auto', 'openai', 'scripted' or 'offline' — use",
        ),
        ({"llm": {"modle": "x"}}, "unknown setting 'llm.modle'"),
        ({"llm": {"timeout": 0}}, "llm.timeout: Input should be greater than 0"),
    ],
)
def test_every_bad_value_is_named_with_its_fix(
    tmp_path: Path, data: dict[str, Any], expected: str | None
) -> None:
    path = write(
        tmp_path, {"auth_token": "t", **data} if "auth_token" not in data and data else data
    )
    if expected is None:
        load_config(path, env={})
        return
    found = problems(path)
    assert any(p.startswith(f"{path}: {expected}") for p in found), found


def test_bad_values_from_the_environment_and_flags_name_their_source(tmp_path: Path) -> None:
    path = write(tmp_path, {"auth_token": "t"})
    [from_env] = problems(path, env={"AM_WORKER_CONCURRENCY": "many"})
    assert from_env.startswith("AM_WORKER_CONCURRENCY: concurrency: Input should be a valid int")
    [from_llm_env] = problems(path, env={"AM_LLM_TIMEOUT": "soon"})
    assert from_llm_env.startswith("AM_LLM_TIMEOUT: llm.timeout:")
    [from_flag] = problems(path, flags={"concurrency": 0})
    assert from_flag.startswith("--concurrency: concurrency:")
    [token_flag] = problems(path, flags={"auth_token": ""})
    assert token_flag.startswith("--token: auth_token: is empty")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {"roles": 5, "concurrency": 0})
    found = problems(path)
    assert len(found) == 3
    assert [p.split(": ")[1].split(" ")[0] for p in found] == ["auth_token", "roles", "concurrency"]


def test_handler_import_errors_are_config_errors() -> None:
    assert callable(import_handler("json:dumps"))
    with pytest.raises(ConfigError, match="no module named 'no_such_module_xyz'"):
        import_handler("no_such_module_xyz:run")
    with pytest.raises(ConfigError, match="json has no attribute 'nothing'"):
        import_handler("json:nothing")
    with pytest.raises(ConfigError, match="is not a function"):
        import_handler("json:__doc__")


def test_an_unusable_llm_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        build_llm(LLMConfig(provider="openai", model="gpt-4o-mini"))
    assert caught.value.problems[0].startswith("llm: no API key")
    assert "OPENAI_API_KEY" in caught.value.problems[0]
    assert build_llm(LLMConfig()).name == "scripted"


def test_the_command_prints_messages_not_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("AM_WORKER_AUTH_TOKEN", "AM_WORKER_CONFIG", "AM_WORKER_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    missing = runner.invoke(app, ["worker", "--config", "nope.json"])
    assert missing.exit_code == 2
    assert "configuration error: nope.json: no such file" in missing.stderr
    assert "Traceback" not in missing.output

    write(tmp_path, {"auth_token": "t", "roles": 5})
    bad = runner.invoke(app, ["worker", "--concurrency", "0"])
    assert bad.exit_code == 2
    assert "configuration error: mcp_client_config.json: roles:" in bad.stderr
    assert "configuration error: --concurrency: concurrency:" in bad.stderr
    assert "Traceback" not in bad.output
