"""End to end in a real browser: Debian's chromium, headless, driven by Playwright, against
`afterword serve` on 127.0.0.1. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Route, async_playwright

from tests.cli import AFTERWORD, ROOT, free_port, run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "correct horse battery"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (.ci/run installs it with apt-get)",
    ),
]


@pytest.fixture
async def server(cli_env: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """`afterword serve` on a free port after `db upgrade`, with a manager login anna."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**cli_env, "PUBLIC_BASE_URL": base, "PORT": str(port)}
    assert 0 == run(["db", "upgrade"], env, tmp_path).returncode
    added = run(
        ["staff", "add", "--web-login", "anna", "--password-stdin"], env, tmp_path, stdin=PASSWORD + "\n"
    )
    assert 0 == added.returncode, added.stderr
    with (tmp_path / "serve.log").open("w") as log:
        proc = await asyncio.create_subprocess_exec(AFTERWORD, "serve", env=env, cwd=tmp_path, stderr=log)
        try:
            deadline = time.monotonic() + 90  # a busy machine starts it slowly
            async with httpx.AsyncClient() as client:
                while True:
                    try:
                        if (await client.get(f"{base}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None, (tmp_path / "serve.log").read_text()
                    assert time.monotonic() < deadline, "serve did not come up"
                    await asyncio.sleep(0.2)
            yield base, env
        finally:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 60)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium from Debian, with no network beyond 127.0.0.1 needed."""
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_answer_in_the_browser_then_see_it_on_the_dashboard(
    server: tuple[str, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    """A German survey answered by clicking shows up on the dashboard after login, and in the CSV export."""
    base, env = server
    made = run(
        ["trigger", "--channel", "web", "--ticket", "T-100", "--agent", "anna", "--lang", "de"], env, tmp_path
    )
    assert 0 == made.returncode, made.stderr
    link = made.stdout.splitlines()[1]
    SHOTS.mkdir(parents=True, exist_ok=True)

    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, locale="en-US"
    )
    page = await phone.new_page()
    await page.goto(link)
    await page.get_by_role("button", name="2 – Zufrieden").wait_for()
    await page.screenshot(path=str(SHOTS / "survey.png"), full_page=True)
    await page.get_by_role("button", name="2 – Zufrieden").click()
    await page.get_by_role("button", name="1 – Zu 100%").click()
    # The keyboard works too: focus the third point and press Enter.
    await page.get_by_role("button", name="2 – Gemäß meiner Erwartung").focus()
    await page.keyboard.press("Enter")
    await page.get_by_label("Möchten Sie uns noch etwas mitteilen?", exact=False).fill(
        "Sehr freundlich, danke!"
    )
    await page.get_by_role("button", name="Absenden").click()
    await page.get_by_text("Vielen Dank für Ihre Antworten!").wait_for()
    await phone.close()

    desk = await browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-US"
    )
    page = await desk.new_page()
    await page.goto(f"{base}/dashboard")
    await page.get_by_label("Login").fill("anna")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.get_by_role("heading", name="Afterword dashboard").wait_for()
    chart_width = await page.wait_for_function(
        "() => { const img = document.querySelector('img.chart'); return img.complete && img.naturalWidth; }"
    )
    assert 1000 == await chart_width.json_value()  # the trend chart loaded (a PNG, 1000 px wide)
    body = await page.inner_text("body")
    # One customer answered three CSAT questions: the card counts the satisfaction answer once,
    # and each question is listed on its own below.
    assert "100.0 %, n=1 (too few for an interval)" in body
    assert "Each question" in body
    assert "Sehr freundlich, danke!" in body
    await page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)

    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export answers (CSV)").click()
    download = await info.value
    saved = tmp_path / "export.csv"
    await download.save_as(saved)
    await desk.close()
    rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(saved.read_text, encoding="utf-8"))))
    assert [
        ("satisfaction", "2", ""),
        ("resolution", "1", ""),
        ("speed", "2", ""),
        ("comment", "", "Sehr freundlich, danke!"),
    ] == [(r["question_id"], r["score"], r["text"]) for r in rows]


async def test_api_docs_work_without_internet(server: tuple[str, dict[str, str]], browser: Browser) -> None:
    """/docs draws the API's operations with every request outside 127.0.0.1 refused and no policy violation."""
    base, _env = server
    outside: list[str] = []
    problems: list[str] = []

    async def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    await context.route("**/*", local_only)
    page = await context.new_page()
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    await page.goto(f"{base}/docs")
    create = page.locator(".opblock-post").filter(has=page.locator('[data-path="/api/surveys"]'))
    await create.wait_for(state="visible")
    await create.locator(".opblock-summary").click()  # open it: the request body's schema is drawn
    await create.get_by_text("ticket_id").first.wait_for(state="visible")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "api-docs.png"), full_page=False)
    await context.close()
    assert ([], []) == (outside, problems)


async def test_an_agent_dashboard_in_the_browser_shows_only_their_own_comments(
    server: tuple[str, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    """An agent's login shows their own comment and not another agent's, on the page and in the export."""
    from datetime import UTC, datetime, timedelta

    base, env = server
    added = run(
        ["staff", "add", "--web-login", "ben", "--role", "agent", "--password-stdin"],
        env,
        tmp_path,
        stdin=PASSWORD + "\n",
    )
    assert 0 == added.returncode, added.stderr
    day = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    (tmp_path / "answers.csv").write_text(
        "response_id,submitted_at,metric,score,agent,comment\n"
        f"r1,{day},csat,5,anna,Anna solved it at once\n"
        f"r2,{day},csat,2,ben,Ben called back twice\n",
        encoding="utf-8",
    )
    imported = run(["import", "answers.csv"], env, tmp_path)
    assert 0 == imported.returncode, imported.stderr

    desk = await browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-US"
    )
    page = await desk.new_page()
    await page.goto(f"{base}/dashboard")
    await page.get_by_label("Login").fill("ben")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.get_by_role("heading", name="Afterword dashboard").wait_for()
    body = await page.inner_text("body")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export answers (CSV)").click()
    saved = tmp_path / "export.csv"
    await (await info.value).save_as(saved)
    await desk.close()
    rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(saved.read_text, encoding="utf-8"))))
    assert (True, False) == ("Ben called back twice" in body, "Anna solved it at once" in body)
    assert [("ben", "Ben called back twice")] == [(r["agent"], r["text"]) for r in rows]
