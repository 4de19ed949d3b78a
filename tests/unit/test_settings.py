"""Settings refuse values that would only fail later, deep inside start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent_manager.config import Settings


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "http://redis:6379", "redis"])
def test_a_redis_url_without_a_redis_scheme_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="AM_REDIS_URL must start with redis://"):
        Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache:6380", None])
def test_redis_urls_and_none(url: str | None) -> None:
    assert Settings(_env_file=None, redis_url=url).redis_url == url  # type: ignore[call-arg]


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_REDIS_URL", "")
    assert Settings(_env_file=None).redis_url is None  # type: ignore[call-arg]
