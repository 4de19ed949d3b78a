"""``am serve`` as a real child process, for tests that stop and start servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server import ADMIN_TOKEN, free_port


class ServerProcess:
    """One ``am serve`` process on a given database and port."""

    def __init__(self, db_url: str, workdir: Path, port: int | None = None, **env: Any) -> None:
        self.db_url = db_url
        self.workdir = workdir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "AM_DATABASE_URL": db_url,
            "AM_ADMIN_TOKEN": ADMIN_TOKEN,
            "AM_AUTO_MIGRATE": "true",
            "AM_PORT": str(self.port),
            "AM_LOG_LEVEL": "warning",
            "AM_REAPER_INTERVAL": "0.2",
            "AM_RETRY_BASE_SECONDS": "0",
            **{k: str(v) for k, v in env.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent_manager", "serve"],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
