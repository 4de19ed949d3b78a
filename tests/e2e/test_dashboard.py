"""The web dashboard in a real browser (Debian's Chromium, driven by Playwright) against
an ``am serve`` process.

The tests play the worker themselves over HTTP (claim, report) for steps of a role no
one else serves, and watch the page follow: a node changes colour when the step is
claimed and again when its result is reported, which only happens through the task's
event stream. Screenshots go to ``$AM_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.processes import ServerProcess
from tests.server import ADMIN_TOKEN

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("AM_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("AM_TEST_ARTIFACTS") or ROOT / "test-artifacts")
ROLE = "dash-tester"  # served by no embedded agent: the tests run these steps by hand
WAIT_MS = 15_000  # a generous bound for a loaded machine; nothing waits for it unless failing


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("dashboard")
    process = ServerProcess(
        f"sqlite+aiosqlite:///{workdir / 'am.db'}",
        workdir,
        AM_LLM_PROVIDER="scripted",
        AM_EMBEDDED_WORK_ROLES="analyst,researcher,writer",
    ).start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def read_token(server: ServerProcess) -> str:
    """A token with only the read scope, made as a user would: ``am token create``."""
    done = subprocess.run(
        [sys.executable, "-m", "agent_manager", "token", "create", "--scope", "read", "--json"],
        env={**server.env, "AM_LOG_LEVEL": "warning"},
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return str(json.loads(done.stdout)["token"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is needed for the dashboard tests and is not at {CHROMIUM}: "
            "install it (apt-get install chromium) or set AM_TEST_CHROMIUM to its path"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


# -- helpers ------------------------------------------------------------------------


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"))


def sign_in(page: Page, server: ServerProcess, token: str, at: str = "") -> None:
    page.goto(f"{server.url}/{at}")
    page.fill("#token", token)
    page.click("form.login-form button[type=submit]")
    expect(page.locator("#nav")).to_be_visible()


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    r = api.post("/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def claim(api: httpx.Client, agent: str = "dash-worker") -> dict[str, Any]:
    r = api.get("/v1/tasks/ready", params={"agent_id": agent, "role": ROLE, "wait": 10})
    assert r.status_code == 200, r.text
    return dict(r.json())


def report(
    api: httpx.Client, claimed: dict[str, Any], agent: str = "dash-worker", **fields: Any
) -> None:
    body = {
        "task_id": claimed["task_id"],
        "step_id": claimed["step"]["id"],
        "claim_token": claimed["claim_token"],
        "agent_id": agent,
        "status": "success",
        **fields,
    }
    r = api.post("/v1/results", json=body)
    assert r.status_code == 200, r.text


def node(page: Page, step_id: str) -> Any:
    return page.locator(f'svg.graph g.node[data-step="{step_id}"]')


#: The status colours of app.css (--ready, --claimed, --done), as computed styles say them.
COLOURS = {"ready": "rgb(37, 99, 235)", "claimed": "rgb(217, 119, 6)", "done": "rgb(22, 163, 74)"}


def expect_colour(page: Page, step_id: str, status: str) -> None:
    """Wait until the node's status stripe is painted in ``status``'s colour (colours
    change with a short CSS transition, so a single read could catch one midway)."""
    page.wait_for_function(
        """([id, colour]) => {
            const stripe = document.querySelector(`g.node[data-step="${id}"] .node-stripe`);
            return stripe !== null && getComputedStyle(stripe).fill === colour;
        }""",
        arg=[step_id, COLOURS[status]],
    )


# -- tests --------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_token_and_accepts_a_read_token(
    page: Page, server: ServerProcess, read_token: str
) -> None:
    page.goto(server.url + "/")
    expect(page.locator("form.login-form")).to_be_visible()
    page.fill("#token", "am_not_a_real_token")
    page.click("form.login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("The server refused this token")
    expect(page.locator("#nav")).to_be_hidden()
    shot(page, "login-refused")

    page.fill("#token", read_token)
    page.click("form.login-form button[type=submit]")
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('am.token')") == read_token
    page.reload()  # the tab keeps its sign-in
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()

    page.click("#logout")
    expect(page.locator("form.login-form")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('am.token')") is None


def test_a_step_changes_colour_live_and_shows_its_locks_and_history(
    page: Page, server: ServerProcess, api: httpx.Client, read_token: str
) -> None:
    task_id = submit(
        api,
        {
            "goal": "Follow two steps live",
            "steps": [
                {
                    "id": "gather",
                    "role": ROLE,
                    "instruction": "Collect the designs",
                    "files": [{"path": "notes/designs.md", "mode": "write"}],
                },
                {"id": "write-up", "role": ROLE, "depends_on": ["gather"]},
            ],
            "options": {"audit": False, "synthesize": False},
        },
    )
    sign_in(page, server, read_token, f"#/tasks/{task_id}")
    expect(node(page, "gather")).to_have_attribute("data-status", "ready")
    expect(node(page, "write-up")).to_have_attribute("data-status", "pending")
    # The page follows the server-sent event stream, not a polling loop.
    expect(page.locator(".live")).to_have_attribute("data-state", "live")
    expect_colour(page, "gather", "ready")

    gather = claim(api)
    expect(node(page, "gather")).to_have_attribute("data-status", "claimed")
    expect(node(page, "gather")).to_have_class("node status-claimed")
    expect_colour(page, "gather", "claimed")
    node(page, "gather").click()
    panel = page.locator("#step-panel")
    expect(panel.locator("tr.lock")).to_contain_text("notes/designs.md")
    expect(panel.locator("tr.lock")).to_contain_text("dash-worker")
    shot(page, "step-claimed")

    history = [
        {
            "thought": "The notes should list the designs.",
            "action": "read_file",
            "action_input": {"path": "notes/designs.md"},
            "observation": "log, broker, database",
        },
        {"thought": "That is enough to answer.", "action": "final_answer", "action_input": "…"},
    ]
    report(api, gather, output="## Designs\n\n- log\n- broker\n- database", ra_history=history)
    expect(node(page, "gather")).to_have_attribute("data-status", "done")
    expect(node(page, "write-up")).to_have_attribute("data-status", "ready")
    expect_colour(page, "gather", "done")
    turns = panel.locator(".ra-turn")
    expect(turns).to_have_count(2)
    expect(turns.nth(0)).to_contain_text("The notes should list the designs.")
    expect(turns.nth(0).locator("code.action")).to_have_text("read_file")
    expect(turns.nth(0)).to_contain_text("log, broker, database")
    expect(turns.nth(1).locator("code.action")).to_have_text("final_answer")
    expect(panel.locator(".markdown h2")).to_have_text("Designs")
    expect(panel).to_contain_text("none held")  # the lock ended with the result
    shot(page, "step-history")

    # The last step's output is the answer; what it echoes must not run in the page.
    hostile = (
        "# Summary\n\nTwo points:\n\n- first\n- second\n\n"
        '<img src="x" onerror="window.__injected = 1">\n\n<script>window.__injected = 2</script>'
    )
    report(api, claim(api), output=hostile)
    expect(page.locator(".task-head .pill")).to_have_text("completed")
    answer = page.locator("#final-answer")
    expect(answer.locator(".markdown h1")).to_have_text("Summary")
    expect(answer.locator(".markdown li")).to_have_count(2)
    assert answer.locator("script, [onerror]").count() == 0
    assert page.evaluate("window.__injected") is None
    expect(page.locator(".live")).to_have_attribute("data-state", "ended")


def test_a_full_cycle_shows_each_audit_round_and_the_final_answer(
    page: Page, server: ServerProcess, api: httpx.Client, read_token: str
) -> None:
    task_id = submit(api, {"goal": "Compare three queueing designs"})
    sign_in(page, server, read_token, f"#/tasks/{task_id}")
    expect(page.locator(".task-head .pill")).to_have_text("completed")
    expected = {
        "_plan": "node status-done system role-planner",
        "_audit-1": "node status-done system role-auditor verdict-failed",
        "_audit-2": "node status-done system role-auditor verdict-passed",
        "_synthesis": "node status-done system role-synthesizer",
    }
    for step_id, classes in expected.items():
        expect(node(page, step_id)).to_have_class(classes)
    audits = page.locator("#audits .audit")
    expect(audits).to_have_count(2)
    expect(audits.nth(0).locator(".pill")).to_have_text("failed")
    expect(audits.nth(1).locator(".pill")).to_have_text("passed")
    answer = page.locator("#final-answer .markdown")
    expect(answer.locator("h2")).to_contain_text("Compare three queueing designs")
    expect(answer.locator("li").first).to_be_visible()

    # The step the first audit sent back ran twice; both attempts keep their history.
    task = api.get(f"/v1/tasks/{task_id}").json()
    flagged = task["audits"][0]["report"]["findings"][0]["step_id"]
    audits.nth(0).locator(f'button.chip:text-is("{flagged}")').click()
    panel = page.locator("#step-panel")
    expect(panel.locator("h2")).to_have_text(flagged)
    expect(panel.locator(".attempt")).to_have_count(2)
    expect(panel.locator(".callout.warn")).to_contain_text("Rework notes")
    expect(panel.locator(".attempt[open] .ra-turn").first).to_be_visible()
    shot(page, "full-cycle")


def test_the_agents_page_lists_a_worker_and_what_it_holds(
    page: Page, server: ServerProcess, api: httpx.Client, read_token: str
) -> None:
    task_id = submit(api, {"goal": "Hold a step", "steps": [{"id": "held", "role": ROLE}]})
    claimed = claim(api, agent="dash-agent-7")
    sign_in(page, server, read_token, "#/agents")
    row = page.locator('tr[data-agent="dash-agent-7"]')
    expect(row).to_contain_text(ROLE)
    expect(row.locator("a.chip")).to_contain_text("held")
    shot(page, "agents")
    row.locator("a.chip").click()  # to the task, with the held step selected
    expect(page.locator("#step-panel h2")).to_have_text("held")
    assert task_id in page.url
    report(api, claimed, agent="dash-agent-7")


def test_the_page_resumes_its_event_stream_after_a_server_restart(
    page: Page, tmp_path: Path
) -> None:
    server = ServerProcess(f"sqlite+aiosqlite:///{tmp_path / 'am.db'}", tmp_path).start()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
            plan = {
                "goal": "Survive a restart",
                "steps": [{"id": "first", "role": ROLE}],
                "options": {"audit": False, "synthesize": False},
            }
            task_id = submit(api, plan)
        sign_in(page, server, ADMIN_TOKEN, f"#/tasks/{task_id}")
        live = page.locator(".live")
        expect(node(page, "first")).to_have_attribute("data-status", "ready")
        expect(live).to_have_attribute("data-state", "live")
        server.kill()
        expect(live).to_have_attribute("data-state", "reconnecting")
        server.start()
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
            first = claim(api)
            expect(node(page, "first")).to_have_attribute("data-status", "claimed")
            expect(live).to_have_attribute("data-state", "live")
            report(api, first)
        expect(node(page, "first")).to_have_attribute("data-status", "done")
        expect(live).to_have_attribute("data-state", "ended")
    finally:
        server.kill()


def test_the_event_stream_parser_copes_with_split_chunks(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    script = page.locator("script[type=module]").get_attribute("src")
    assert script is not None
    messages = page.evaluate(
        """async (src) => {
            const { SSEParser } = await import(src.replace("app.js", "events.js"));
            const seen = [];
            const parser = new SSEParser((m) => seen.push(m));
            for (const chunk of ["retry: 1000\\r", "\\n\\r\\n: ping\\n\\nid: 7\\nev",
                                 "ent: step.ready\\ndata: {\\"a\\"", ":1}\\r\\n\\r", "\\n"]) {
                parser.push(chunk);
            }
            return { seen, retry: parser.retry };
        }""",
        script,
    )
    assert messages == {
        "seen": [{"id": "7", "type": "step.ready", "data": '{"a":1}'}],
        "retry": 1000,
    }


def test_the_page_and_its_files_are_served_with_cache_headers(
    server: ServerProcess, api: httpx.Client
) -> None:
    index = httpx.get(server.url + "/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in index.headers["content-security-policy"]
    again = httpx.get(server.url + "/", headers={"If-None-Match": index.headers["etag"]})
    assert again.status_code == 304

    src = index.text.split('<script type="module" src="', 1)[1].split('"', 1)[0]
    assert src.startswith("/static/") and src.endswith("/js/app.js")
    script = httpx.get(server.url + src)
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "immutable" in script.headers["cache-control"]
    revalidated = httpx.get(server.url + src, headers={"If-None-Match": script.headers["etag"]})
    assert revalidated.status_code == 304
    assert httpx.get(server.url + "/static/not-this-build/js/app.js").status_code == 404
    icon = httpx.get(server.url + "/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    # The dashboard sits beside the API, not over it.
    assert httpx.get(server.url + "/docs").status_code == 200
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert api.get("/v1/tasks").status_code == 200
