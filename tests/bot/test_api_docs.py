"""/docs in-process: Swagger UI's page loads only files this app serves, under a strict policy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


# The JSON Schema that FastAPI writes into /openapi.json, checked as far as these schemas use it:
# $ref, anyOf, type, enum, const, properties, required, additionalProperties, items, prefixItems.
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}


def schema_problems(value: Any, schema: dict[str, Any], spec: dict[str, Any], path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (whose $refs point into the OpenAPI ``spec``); [] when it fits."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return schema_problems(value, spec["components"]["schemas"][name], spec, path)
    if "anyOf" in schema:
        tries = [schema_problems(value, option, spec, path) for option in schema["anyOf"]]
        return [] if any(not t for t in tries) else [f"{path}: fits no anyOf option: {tries}"]
    kind = schema.get("type")
    if kind is not None:
        bad_bool = isinstance(value, bool) and kind in ("integer", "number")
        if not isinstance(value, JSON_TYPES[kind]) or bad_bool:
            return [f"{path}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: {value!r} is not {schema['const']!r}"]
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"{path}: {key} is required" for key in schema.get("required", []) if key not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(item, properties[key], spec, f"{path}.{key}")
            elif extra is False:
                problems.append(f"{path}: {key} is not in the schema")
            elif isinstance(extra, dict):
                problems += schema_problems(item, extra, spec, f"{path}.{key}")
    if isinstance(value, list):
        fixed = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(fixed):
                problems += schema_problems(item, fixed[i], spec, f"{path}[{i}]")
            elif "items" in schema and schema["items"] is not False:
                problems += schema_problems(item, schema["items"], spec, f"{path}[{i}]")
    return problems


def response_schema(spec: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["paths"][path][method]["responses"][status]["content"]["application/json"][
        "schema"
    ]
    return found


def test_schema_problems_finds_a_wrong_type_a_missing_and_an_unknown_key() -> None:
    """The checker itself: a string for an integer, a missing required key and an extra key are named."""
    spec = {"components": {"schemas": {"S": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}
    schema = {"$ref": "#/components/schemas/S"}
    strict = {**spec["components"]["schemas"]["S"], "required": ["n"], "additionalProperties": False}
    assert (["$.n: '1' is not integer"], ["$: n is required", "$: x is not in the schema"], []) == (
        schema_problems({"n": "1"}, schema, spec),
        schema_problems({"x": 1}, strict, spec),
        schema_problems({"n": 1}, schema, spec),
    )


async def test_real_responses_fit_the_openapi_schemas(service: Service, clock: Clock) -> None:
    """POST /api/surveys (201 and 200), GET /api/surveys/{id} and GET /api/report fit /openapi.json."""
    from bot.apikeys import create_key
    from bot.importer import import_csv
    from bot.inbound import Inbound, handle

    key = await create_key(service.db, "docs", now=clock())
    auth = {"Authorization": f"Bearer {key}"}
    async with running_app(service, clock) as (_app, client, _svc):
        spec = (await client.get("/openapi.json")).json()
        body = {"ticket_id": "T-1", "channel": "web", "metadata": {"plan": "pro", "seats": 3}}
        created = await client.post("/api/surveys", json=body, headers=auth)
        again = await client.post("/api/surveys", json=body, headers=auth)
        token = created.json()["link"].rsplit("/", 1)[1]
        for text in ("1", "2", "3", "schnell und freundlich"):
            await handle(
                service.db,
                service.flows,
                Inbound(channel="web", address="", received_at=clock(), text=text, survey_token=token),
            )
        csv_file = service.settings.database.database  # beside the test database, in its folder
        rows = Path(str(csv_file)).with_name("rows.csv")
        rows.write_text(
            "response_id,agent,submitted_at,metric,score\nr1,anna,2026-11-20T09:00:00Z,nps,9\n",
            encoding="utf-8",
        )
        await import_csv(service.db, rows)
        clock.advance(minutes=1)
        shown = await client.get(f"/api/surveys/{created.json()['id']}", headers=auth)
        report = await client.get("/api/report", params={"by": "agent", "trend": "week"}, headers=auth)
    checked = [
        (created, "post", "/api/surveys", "201"),
        (again, "post", "/api/surveys", "200"),
        (shown, "get", "/api/surveys/{survey_id}", "200"),
        (report, "get", "/api/report", "200"),
    ]
    assert [(status, []) for _r, _m, _p, status in checked] == [
        (str(r.status_code), schema_problems(r.json(), response_schema(spec, m, p, s), spec))
        for r, m, p, s in checked
    ]
    # The responses exercise the optional parts: answers, metadata, groups, trend and comments.
    assert (4, {"plan": "pro", "seats": 3}, ["anna", None], 1) == (
        len(shown.json()["answers"]),
        shown.json()["metadata"],
        [g["key"] for g in report.json()["groups"]],
        len(report.json()["comments"]),
    )


async def test_openapi_names_the_report_and_survey_schemas(client: httpx.AsyncClient) -> None:
    """/openapi.json refers the three routes to named schemas that list every key of the models."""
    from bot.web.resources import Survey, SurveyCreated
    from scoring.report import Report

    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    refs = [
        response_schema(spec, "post", "/api/surveys", "201")["$ref"],
        response_schema(spec, "get", "/api/surveys/{survey_id}", "200")["$ref"],
        response_schema(spec, "get", "/api/report", "200")["$ref"],
    ]
    assert [
        "#/components/schemas/SurveyCreated",
        "#/components/schemas/Survey",
        "#/components/schemas/Report",
    ] == refs
    assert [
        sorted(m.model_json_schema(by_alias=True)["properties"]) for m in (SurveyCreated, Survey, Report)
    ] == [sorted(schemas[name]["properties"]) for name in ("SurveyCreated", "Survey", "Report")]
