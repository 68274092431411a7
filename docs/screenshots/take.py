"""Take the README's screenshots from a fresh demo database, in Debian's headless chromium.

Usage: make screenshots   (or .venv/bin/python docs/screenshots/take.py)

Builds `afterword demo` in a temporary folder, serves it on a free port of 127.0.0.1 with
the channels off, signs in with Playwright and writes, next to this file:
  dashboard.png  the dashboard over 90 days at desktop width, the whole page
  survey.png     a German web survey's first question on a phone
Needs the dev extras (playwright) and /usr/bin/chromium; downloads no browser.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent
AFTERWORD = str(Path(sys.executable).parent / "afterword")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOGIN, PASSWORD = "shots", "screenshot-password"
PERIOD = "90d"  # thirteen weekly points: the trend chart shows the months


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _afterword(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "") -> str:
    done = subprocess.run(  # noqa: S603 - our own script with fixed arguments
        [AFTERWORD, *args], input=stdin, capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    if done.returncode != 0:
        sys.exit(f"afterword {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


async def _wait_for(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"afterword serve did not come up; see {log}")
            await asyncio.sleep(0.2)


async def _shoot(base: str, link: str) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            phone = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page = await phone.new_page()
            await page.goto(link)
            await page.get_by_role("button", name="2 – Zufrieden").wait_for()
            await page.screenshot(path=str(HERE / "survey.png"), full_page=True)
            await phone.close()

            desk = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await desk.new_page()
            await page.goto(f"{base}/dashboard")
            await page.get_by_label("Login").fill(LOGIN)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await page.get_by_role("heading", name="Afterword dashboard").wait_for()
            await page.goto(f"{base}/dashboard?since={PERIOD}")
            await page.wait_for_function(
                "() => { const img = document.querySelector('img.chart'); return img.complete && img.naturalWidth; }"
            )
            await page.screenshot(path=str(HERE / "dashboard.png"), full_page=True)
            await desk.close()
        finally:
            await browser.close()


def main() -> None:
    """Demo, serve, screenshots, stop."""
    if not Path(CHROMIUM).exists():
        sys.exit(f"no chromium at {CHROMIUM}: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="afterword-shots-") as folder:
        cwd = Path(folder)  # no .env of the repository is read there
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "FLOWS_DIR"))}
        env.update(
            DATABASE_URL="sqlite+aiosqlite:///demo.db",
            PUBLIC_BASE_URL=base,
            TELEGRAM_BOT_TOKEN="",
            TWILIO_AUTH_TOKEN="",
        )
        # The demo refuses DATABASE_URL's own file, so it runs without it.
        demo = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        login = ["--web-login", LOGIN, "--password-stdin"]
        wrote = _afterword(["demo", "--database", "demo.db", *login], demo, cwd, PASSWORD + "\n")
        print(wrote.splitlines()[0])
        survey = ["--channel", "web", "--ticket", "SHOT-1", "--lang", "de", "--agent", "Anna"]
        made = _afterword(["trigger", *survey], env, cwd)
        link = made.splitlines()[1]
        log = cwd / "serve.log"
        with log.open("w") as out:
            server = subprocess.Popen(  # noqa: S603 - our own script with fixed arguments
                [AFTERWORD, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=out,
            )
            try:
                asyncio.run(_wait_for(base, server, log))
                asyncio.run(_shoot(base, link))
            finally:
                server.send_signal(signal.SIGINT)
                server.wait(60)
    print(f"wrote {HERE / 'dashboard.png'} and {HERE / 'survey.png'}")


if __name__ == "__main__":
    main()
