"""Take the README's dashboard screenshot: a task page after a whole cycle.

Starts ``am serve`` on a throw-away SQLite database with the embedded scripted agents
serving every role (planner, analyst, researcher, writer, auditor, synthesizer),
submits a goal, waits until the cycle is done (plan, parallel steps, an audit that
fails, the rework, an audit that passes, the synthesis), signs in to the dashboard in
headless Chromium and saves the task page with the reworked step selected.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/images/dashboard.png]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
GOAL = "Compare three queueing designs for our job system and recommend one"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workdir: Path, token: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AM_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'am.db'}",
        "AM_ADMIN_TOKEN": token,
        "AM_PORT": str(port),
        "AM_WORKSPACE": str(workdir / "workspace"),
        "AM_LOG_LEVEL": "warning",
        "AM_LLM_PROVIDER": "scripted",
        "AM_EMBEDDED_WORK_ROLES": "analyst,researcher,writer",
        # A little pacing, so the timings on the page look like work was done.
        "AM_LLM_SCRIPTED_LATENCY": "0.3",
    }
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "agent_manager", "serve"],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up; see its log")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


def run_cycle(api: httpx.Client, timeout: float = 120) -> dict[str, Any]:
    task_id = api.post("/v1/tasks", json={"goal": GOAL}).raise_for_status().json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").raise_for_status().json()
        if task["status"] in ("completed", "failed", "cancelled"):
            if task["status"] != "completed":
                raise SystemExit(f"the task ended {task['status']}: {task['error']}")
            return task
        time.sleep(0.2)
    raise SystemExit("the task did not finish in time")


def screenshot(url: str, token: str, task: dict[str, Any], args: argparse.Namespace) -> None:
    findings = [f for a in task["audits"] for f in a["report"]["findings"]]
    step = findings[0]["step_id"] if findings else task["steps"][1]["id"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(
            viewport={"width": args.width, "height": args.height}, device_scale_factor=1
        )
        page.goto(f"{url}/#/tasks/{task['id']}/{step}")
        page.fill("#token", token)
        page.click("form.login-form button[type=submit]")
        expect(page.locator(".live")).to_have_attribute("data-state", "ended", timeout=15_000)
        expect(page.locator("#final-answer .markdown")).to_be_visible()
        expect(page.locator("#step-panel .attempt").first).to_be_visible()
        page.evaluate("window.scrollTo(0, 0)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    parser.add_argument("--chromium", default=os.environ.get("AM_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()

    token = f"am_{secrets.token_urlsafe(24)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="am-screenshot-") as tmp:
        server = start_server(Path(tmp), token, port)
        try:
            wait_ready(url, server)
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as api:
                task = run_cycle(api)
            screenshot(url, token, task, args)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
