"""/docs in-process: Swagger UI's page loads only files this app serves, under a strict policy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.service import Service
from tests.databases import SqliteTemplate
from tests.support import Clock, running_app

# Every URL the page names: its files (src, href) and the schema Swagger UI fetches (url: '…').
LINKS = re.compile(r"""(?:src|href)="([^"]*)"|\burl: '([^']*)'""")
CDN_HOSTS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fastapi.tiangolo.com")
NONCE = re.compile(r"""script-src 'nonce-([^']+)';""")
# Python's mimetypes names JavaScript text/javascript from 3.12 on; browsers take either.
JAVASCRIPT = ("text/javascript", "application/javascript")


@pytest.fixture
def db_url(sqlite_template: SqliteTemplate, tmp_path: Path) -> str:
    """SQLite only: the docs read no table, so a second backend would test nothing more."""
    return sqlite_template.migrated(tmp_path)


@pytest.fixture
async def client(service: Service, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """The app with no provider configured, and an in-process client."""
    async with running_app(service, clock) as (_app, client, _svc):
        yield client


def links(page: str) -> list[str]:
    return [src or url for src, url in LINKS.findall(page)]


async def test_docs_name_only_files_of_this_app(client: httpx.AsyncClient) -> None:
    """The page's stylesheet, icon, script and schema are same-origin paths; no CDN host appears."""
    page = (await client.get("/docs")).text
    assert [
        "/static/swagger-ui/swagger-ui.css",
        "/static/swagger-ui/favicon.png",
        "/static/swagger-ui/swagger-ui-bundle.js",
        "/openapi.json",
    ] == links(page)
    assert ([], False) == ([h for h in CDN_HOSTS if h in page], "//" in page)


async def test_each_file_the_docs_load_answers_with_its_type(client: httpx.AsyncClient) -> None:
    """Every URL on the page answers 200 with the content type a browser expects, and is not empty."""
    found = {}
    for url in links((await client.get("/docs")).text):
        response = await client.get(url)
        kind = response.headers["content-type"].split(";")[0]
        found[url] = (
            response.status_code,
            "javascript" if kind in JAVASCRIPT else kind,
            len(response.content) > 0,
        )
    assert {
        "/static/swagger-ui/swagger-ui.css": (200, "text/css", True),
        "/static/swagger-ui/favicon.png": (200, "image/png", True),
        "/static/swagger-ui/swagger-ui-bundle.js": (200, "javascript", True),
        "/openapi.json": (200, "application/json", True),
    } == found


async def test_docs_allow_only_their_own_scripts_by_a_fresh_nonce(client: httpx.AsyncClient) -> None:
    """Each response has its own nonce; both scripts on the page carry it and the policy allows no other."""
    first, second = await client.get("/docs"), await client.get("/docs")
    policy = first.headers["content-security-policy"]
    nonces = [NONCE.findall(r.headers["content-security-policy"]) for r in (first, second)]
    assert (1, 1) == (len(nonces[0]), len(nonces[1]))
    assert nonces[0] != nonces[1]
    assert [f'<script nonce="{nonces[0][0]}"'] * 2 == re.findall(r"<script[^>]*?nonce=\"[^\"]*\"", first.text)
    assert 2 == first.text.count("<script")
    assert ("nosniff", "no-referrer", True, True) == (
        first.headers["x-content-type-options"],
        first.headers["referrer-policy"],
        policy.startswith("default-src 'none';"),
        "frame-ancestors 'none'" in policy,
    )
