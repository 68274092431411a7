"""Erasure and access requests (GDPR Art. 17 and 15): `DELETE`/`GET /api/contacts/…`, `afterword erase`
and `afterword export-person`, on a person surveyed by SMS and by Telegram, with the fakes at the HTTP edge."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from bot.apikeys import create_key
from bot.audit import listing
from bot.logs import library_levels, redact
from bot.privacy import address_hash
from bot.scheduler import Scheduler
from bot.service import Service
from bot.store.db import sqlite_path
from bot.store.tables import answers, contacts, erased_contacts, metadata, surveys
from bot.surveys import NewSurvey, create_survey
from tests.bot.test_telegram import SECRET, button, telegram_settings
from tests.bot.test_twilio import PUBLIC, SENDER, twilio_settings
from tests.cli import invoke
from tests.fakes.telegram import FakeBotApi, callback_update, message_update
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

PHONE = "+4915112345678"
OTHER = "+4915187654321"
CHAT = 734019283
NAME = "Erika Mustermann"
SMS_COMMENT = "Der Techniker kam pünktlich"
CHAT_COMMENT = "Flotte Antwort im Chat"
OTHER_COMMENT = "Alles bestens"
# Every trace of the person: number (with and without +), chat id, name, comments.
TRACES = (PHONE, PHONE[1:], str(CHAT), NAME, "Erika", SMS_COMMENT, CHAT_COMMENT)
ZEROS = dict.fromkeys(("contacts", "erased_contacts", "surveys", "answers", "jobs", "inbound_events"), 0)


@dataclass
class World:
    """The app with Twilio and Telegram on against their fakes, an API key, and the person's surveys."""

    app: FastAPI
    client: httpx.AsyncClient
    service: Service
    twilio: FakeTwilioApi
    telegram: FakeBotApi
    key: str
    sids: count[int] = field(default_factory=lambda: count(1))
    updates: count[int] = field(default_factory=lambda: count(100))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def trigger(self, ticket: str, channel: str, to: str, **extra: Any) -> httpx.Response:
        body = {"ticket_id": ticket, "channel": channel, "to": to, "agent": "anna", **extra}
        return await self.client.post("/api/surveys", json=body, headers=self.auth)

    async def tick(self) -> int:
        return await Scheduler(self.service, self.app.state.channels, worker="test").run_once()

    async def sms(self, text: str, sender: str = PHONE) -> None:
        """A reply by SMS, signed as Twilio signs it."""
        params = {"From": sender, "To": SENDER, "Body": text, "MessageSid": f"SM{next(self.sids):032d}"}
        signature = RequestValidator(self.twilio.auth_token).compute_signature(PUBLIC + "/twilio/sms", params)
        response = await self.client.post(
            "/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
        )
        assert 200 == response.status_code

    async def telegram_update(self, update: dict[str, Any]) -> None:
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert 200 == (await self.client.post("/telegram/webhook", json=update, headers=headers)).status_code

    async def tap(self, value: int) -> None:
        """Tap ``value`` on the newest question sent to the person's chat (as Erika)."""
        sent = [c for c in self.telegram.sent("sendMessage") if c.params.get("chat_id") == CHAT]
        data = button(sent[-1], value)
        update = callback_update(
            next(self.updates),
            CHAT,
            len(sent),
            data,
            first_name="Erika",
            message_text=sent[-1].params["text"],
        )
        await self.telegram_update(update)

    async def say(self, text: str) -> None:
        await self.telegram_update(message_update(next(self.updates), CHAT, text, first_name="Erika"))

    async def report(self) -> dict[str, Any]:
        response = await self.client.get("/api/report", headers=self.auth)
        assert 200 == response.status_code
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture
async def world(
    service: Service, fake_twilio: FakeTwilioApi, fake_telegram: FakeBotApi, clock: Clock
) -> AsyncIterator[World]:
    """The person answered a CSAT survey by SMS and an NPS survey in Telegram; another person one by SMS."""
    settings = {**telegram_settings(fake_telegram), **twilio_settings(fake_twilio)}
    async with running_app(service, clock, **settings) as (app, client, svc):
        key = await create_key(svc.db, "privacy-test", now=clock())
        w = World(app, client, svc, fake_twilio, fake_telegram, key)
        assert 201 == (await w.trigger("T-1", "sms", PHONE, metadata={"customer": NAME})).status_code
        assert (
            201
            == (
                await w.trigger("T-2", "telegram", str(CHAT), flow="nps", metadata={"customer": NAME})
            ).status_code
        )
        assert 201 == (await w.trigger("T-3", "sms", OTHER, metadata={"customer": "Max"})).status_code
        assert 3 == await w.tick()
        for text in ("2", "1", "2", SMS_COMMENT):
            await w.sms(text)
        await w.tap(9)
        await w.say(CHAT_COMMENT)
        for text in ("5", "5", "4", OTHER_COMMENT):
            await w.sms(text, sender=OTHER)
        assert ["completed"] * 3 == await _statuses(w.service)
        yield w


async def _statuses(service: Service) -> list[str]:
    async with service.db.read() as conn:
        return list((await conn.execute(sa.select(surveys.c.status).order_by(surveys.c.id))).scalars())


async def dump(service: Service) -> dict[str, list[tuple[str | None, ...]]]:
    """Every row of every table, each column cast to text, sorted."""
    found: dict[str, list[tuple[str | None, ...]]] = {}
    async with service.db.read() as conn:
        for table in metadata.sorted_tables:
            columns = [sa.cast(column, sa.Text) for column in table.columns]
            rows = await conn.execute(sa.select(*columns))
            found[table.name] = sorted(tuple(row) for row in rows)
    return found


def traces_in(tables: dict[str, list[tuple[str | None, ...]]]) -> list[tuple[str, str]]:
    """(table, trace) for each trace of the person found in any text of any row."""
    return sorted(
        {
            (name, trace)
            for name, rows in tables.items()
            for row in rows
            for value in row
            if value is not None
            for trace in TRACES
            if trace in value
        }
    )


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The report's scores: CSAT, NPS and CES with their n, and each question's."""
    return {key: report.get(key) for key in ("csat", "nps", "ces", "questions", "response_rate")}


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record as `serve` with LOG_LEVEL=DEBUG keeps them, from before the world is made
    (so its setup is captured too)."""
    caplog.set_level(logging.DEBUG)
    library_levels(logging.DEBUG)
    return caplog


async def test_erase_leaves_no_trace_and_keeps_the_report(
    every_log: pytest.LogCaptureFixture, world: World, db_url: str
) -> None:
    """Erased by phone and by chat id: no number, chat id, name or comment anywhere (tables, the SQLite
    file's bytes, the logs as the server writes them: redacted by bot.logs); the figures are the same."""
    before = await dump(world.service)
    report = figures(await world.report())
    assert {"contacts", "surveys", "answers"} <= {name for name, _ in traces_in(before)}

    dry = await world.client.delete(f"/api/contacts/{PHONE}", params={"dry_run": "true"}, headers=world.auth)
    assert (200, True) == (dry.status_code, dry.json()["dry_run"])
    assert before == await dump(world.service)

    by_phone = await world.client.delete(f"/api/contacts/{PHONE}", headers=world.auth)
    by_chat = await world.client.delete(f"/api/contacts/{CHAT}", headers=world.auth)
    assert (200, 200) == (by_phone.status_code, by_chat.status_code)
    # The number: its SMS contact; hashes for SMS, WhatsApp and voice; the survey; its comment; its
    # send, reminder and expiry jobs. The dry run counted the same.
    changed = {**ZEROS, "contacts": 1, "erased_contacts": 3, "surveys": 1, "answers": 1, "jobs": 3}
    assert (changed, changed) == (dry.json()["changed"], by_phone.json()["changed"])
    assert (1, 1, 1, 1) == tuple(
        by_chat.json()["changed"][k] for k in ("contacts", "erased_contacts", "surveys", "answers")
    )

    after = await dump(world.service)
    assert [] == traces_in(after)
    assert report == figures(await world.report())
    async with world.service.db.read() as conn:
        kept = list(
            await conn.execute(
                sa.select(
                    answers.c.question_id, answers.c.score, answers.c.text, answers.c.agent, answers.c.channel
                ).order_by(answers.c.id)
            )
        )
    # Scores stay with their agent and channel; only the other person's comment is left.
    assert [
        ("satisfaction", 2, None, "anna", "sms"),
        ("resolution", 1, None, "anna", "sms"),
        ("speed", 2, None, "anna", "sms"),
        ("comment", None, None, "anna", "sms"),
        ("recommend", 9, None, "anna", "telegram"),
        ("reason", None, None, "anna", "telegram"),
        ("satisfaction", 5, None, "anna", "sms"),
        ("resolution", 5, None, "anna", "sms"),
        ("speed", 4, None, "anna", "sms"),
        ("comment", None, OTHER_COMMENT, "anna", "sms"),
    ] == [tuple(row) for row in kept]

    records = every_log.get_records("setup") + every_log.records
    logged = "\n".join(redact(record.getMessage()) for record in records)
    assert (True, []) == (len(records) > 20, [trace for trace in TRACES if trace in logged])

    if make_url(db_url).get_backend_name() == "sqlite":
        path = sqlite_path(make_url(db_url))
        assert path is not None
        await world.service.db.dispose()
        assert [] == _traces_in_file(path)


def _traces_in_file(path: Path) -> list[str]:
    """The person's traces in the SQLite file's bytes (and its WAL) after VACUUM and a checkpoint."""
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    return [trace for trace in TRACES if trace.encode() in data]


async def test_erased_person_is_refused_as_opted_out_until_they_opt_in(world: World) -> None:
    """After an erasure a trigger for the number or chat id is skipped, without storing it; START by SMS lifts it."""
    await world.client.delete(f"/api/contacts/{PHONE}", headers=world.auth)
    await world.client.delete(f"/api/contacts/{CHAT}", headers=world.auth)
    again = [
        await world.trigger("T-4", "sms", PHONE),
        await world.trigger("T-5", "whatsapp", PHONE),
        await world.trigger("T-6", "telegram", str(CHAT)),
    ]
    assert [(200, "skipped")] * 3 == [(r.status_code, r.json()["status"]) for r in again]
    assert [] == traces_in(await dump(world.service))

    await world.sms("START")
    started = await world.trigger("T-7", "sms", PHONE)
    assert (201, "pending") == (started.status_code, started.json()["status"])
    whatsapp = await world.trigger("T-8", "whatsapp", PHONE)  # opted in by SMS only
    assert (200, "skipped") == (whatsapp.status_code, whatsapp.json()["status"])


async def test_an_erased_telegram_user_opening_a_link_is_refused_and_not_stored(world: World) -> None:
    """A survey link opened by an erased chat gets the closed text; their chat id is not stored again."""
    await world.client.delete(f"/api/contacts/{CHAT}", headers=world.auth)
    made = await world.client.post(
        "/api/surveys", json={"ticket_id": "T-9", "channel": "telegram"}, headers=world.auth
    )
    token = made.json()["link"].rsplit("start=", 1)[1]
    await world.say(f"/start {token}")
    [reply] = [c.params["text"] for c in world.telegram.calls_to("sendMessage")][-1:]
    chat_ids = [found for found in traces_in(await dump(world.service)) if found[1] == str(CHAT)]
    assert ("Diese Umfrage ist bereits geschlossen.", []) == (reply, chat_ids)


async def test_second_erase_reports_zeros(world: World) -> None:
    """Erasure is idempotent: run again, it finds nothing left and says so with zeros (not 404)."""
    first = await world.client.delete(f"/api/contacts/{PHONE}", headers=world.auth)
    second = await world.client.delete(
        f"/api/contacts/{PHONE}", params={"channel": "sms"}, headers=world.auth
    )
    assert (200, 200, ZEROS) == (first.status_code, second.status_code, second.json()["changed"])


async def test_erase_by_ticket_with_the_cli(world: World, cli_env: dict[str, str]) -> None:
    """`afterword erase --ticket T-2 --yes` erases the Telegram contact of that ticket and prints the counts."""
    ran = await asyncio.to_thread(invoke, ["erase", "--ticket", "T-2", "--yes"], cli_env)
    assert (0, "") == (ran.code, ran.stderr)
    lines = dict(line.split() for line in ran.stdout.splitlines()[1:])
    assert ("changed:", "1", "1", "1", "1") == (
        ran.stdout.splitlines()[0],
        *(lines[k] for k in ("contacts", "erased_contacts", "surveys", "answers")),
    )
    left = traces_in(await dump(world.service))
    assert ([], True) == (
        [t for t in left if t[1] in (str(CHAT), CHAT_COMMENT)],
        ("contacts", PHONE) in left,  # the phone's surveys are another ticket's
    )
    again = await asyncio.to_thread(invoke, ["erase", "--ticket", "T-2", "--yes"], cli_env)
    assert {"0"} == {line.split()[1] for line in again.stdout.splitlines()[1:]}


async def test_cli_dry_run_and_refused_confirmation_change_nothing(
    world: World, cli_env: dict[str, str]
) -> None:
    """`--dry-run` prints the counts; without --yes a "no" keeps everything and exits 1."""
    before = await dump(world.service)
    dry = await asyncio.to_thread(invoke, ["erase", "--phone", PHONE, "--dry-run"], cli_env)
    declined = await asyncio.to_thread(invoke, ["erase", "--phone", "015112345678"], cli_env, "n\n")
    assert (0, "would change:", 1) == (dry.code, dry.stdout.splitlines()[0], declined.code)
    assert "Error: not erased" in declined.stderr
    after = await dump(world.service)
    del before["flow_versions"], after["flow_versions"]  # the CLI's Service.open records the flows it loaded
    assert before == after


@pytest.mark.parametrize(
    "args",
    [[], ["--phone", PHONE, "--ticket", "T-1"], ["--telegram", "1", "--email", "a@example.com"]],
    ids=["none", "phone-and-ticket", "telegram-and-email"],
)
def test_erase_needs_exactly_one_selector(args: list[str], tmp_path: Path) -> None:
    """Without exactly one of the four options, erase and export-person exit 2 naming them, before any database."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/none.db", "PATH": "/usr/bin"}
    ran = [invoke([command, *args], env) for command in ("erase", "export-person")]
    message = "Error: give exactly one of --phone, --telegram, --email or --ticket"
    assert [(2, message)] * 2 == [(r.code, r.stderr.strip()) for r in ran]


def test_bad_selectors_name_their_option(tmp_path: Path) -> None:
    """A chat id that is no number, or an e-mail without @, exits 2 naming the option and what is allowed."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/none.db", "PATH": "/usr/bin"}
    chat = invoke(["erase", "--telegram", "kim"], env)
    mail = invoke(["export-person", "--email", "kim"], env)
    assert [
        (2, "Error: --telegram: a Telegram chat id is a number such as 123456789"),
        (2, "Error: --email: an e-mail address such as kim@example.com, at most 255 characters"),
    ] == [(r.code, r.stderr.strip()) for r in (chat, mail)]


async def test_export_returns_exactly_what_is_stored(world: World, cli_env: dict[str, str]) -> None:
    """GET /api/contacts/{number} and `export-person` give the same JSON: the stored contact, surveys and answers."""
    response = await world.client.get(f"/api/contacts/{PHONE}", headers=world.auth)
    assert 200 == response.status_code
    exported = response.json()
    ran = await asyncio.to_thread(invoke, ["export-person", "--phone", PHONE], cli_env)
    assert (0, exported) == (ran.code, json.loads(ran.stdout))

    async with world.service.db.read() as conn:
        contact = (await conn.execute(sa.select(contacts).where(contacts.c.address == PHONE))).one()
        survey = (await conn.execute(sa.select(surveys).where(surveys.c.contact_id == contact.id))).one()
        given = (
            await conn.execute(
                sa.select(answers).where(answers.c.survey_id == survey.id).order_by(answers.c.id)
            )
        ).all()
    assert [
        {
            "id": contact.id,
            "channel": "sms",
            "address": PHONE,
            "language": contact.language,
            "time_zone": contact.time_zone,
            "opted_out_at": None,
            "created_at": contact.created_at.isoformat(),
        }
    ] == exported["contacts"]
    [shown] = exported["surveys"]
    assert (
        survey.id,
        "T-1",
        "support-csat",
        "completed",
        "sms",
        {"customer": NAME},
        survey.sent_at.isoformat(),
    ) == (
        shown["id"],
        shown["ticket"],
        shown["flow"],
        shown["status"],
        shown["channel"],
        shown["metadata"],
        shown["sent_at"],
    )
    assert [(a.question_id, a.metric, a.score, a.text, a.answered_at.isoformat()) for a in given] == [
        (a["question"], a["metric"], a["score"], a["text"], a["answered_at"]) for a in shown["answers"]
    ]
    assert (["send"], [], 0) == (
        [job["kind"] for job in shown["jobs"] if job["kind"] == "send"],
        exported["erasures"],
        exported["inbound_events"],
    )
    assert (False, False) == (OTHER in response.text, OTHER_COMMENT in response.text)


async def test_export_after_erasure_shows_only_the_erasure(world: World) -> None:
    """Once erased, the number is found only as its erasure record: no survey, no contact."""
    await world.client.delete(f"/api/contacts/{PHONE}", headers=world.auth)
    exported = (await world.client.get(f"/api/contacts/{PHONE}", headers=world.auth)).json()
    async with world.service.db.read() as conn:
        stored = (
            await conn.execute(sa.select(erased_contacts.c.channel, erased_contacts.c.address_hash))
        ).all()
    assert ([], [], ["sms", "voice", "whatsapp"]) == (
        exported["contacts"],
        exported["surveys"],
        [e["channel"] for e in exported["erasures"]],
    )
    assert {
        ("sms", address_hash(PHONE)),
        ("whatsapp", address_hash(PHONE)),
        ("voice", address_hash(PHONE)),
    } == set(map(tuple, stored))


async def test_requests_are_audited_without_the_address(world: World) -> None:
    """An export and an erasure each leave an audit row by the API key, naming the person by a hash."""
    await world.client.get(f"/api/contacts/{PHONE}", headers=world.auth)
    await world.client.delete(f"/api/contacts/{PHONE}", params={"dry_run": "true"}, headers=world.auth)
    await world.client.delete(f"/api/contacts/{PHONE}", headers=world.auth)
    rows = [
        (e.actor, e.action, e.subject, e.source)
        for e in await listing(world.service.db)
        if e.action != "apikey-create"
    ]
    subject = f"phone:{address_hash(PHONE)[:16]}"
    assert [
        ("apikey:privacy-test", "export-person", subject, "api"),
        ("apikey:privacy-test", "erase", subject, "api"),
    ] == rows


async def test_api_refusals(world: World) -> None:
    """401 without a key, 404 for an address nobody has, 422 naming a bad address or channel."""
    unknown = await world.client.get("/api/contacts/+4930123456789", headers=world.auth)
    gone = await world.client.delete("/api/contacts/+4930123456789", headers=world.auth)
    keyless = await world.client.get(f"/api/contacts/{PHONE}")
    bad_channel = await world.client.get(
        f"/api/contacts/{PHONE}", params={"channel": "fax"}, headers=world.auth
    )
    bad_number = await world.client.delete("/api/contacts/+49", headers=world.auth)
    assert [404, 404, 401, 422, 422] == [
        r.status_code for r in (unknown, gone, keyless, bad_channel, bad_number)
    ]
    assert [("address", "nothing is stored about that address"), "channel", "address"] == [
        tuple(unknown.json()["error"].values()),
        bad_channel.json()["error"]["field"],
        bad_number.json()["error"]["field"],
    ]


async def test_erase_by_email_and_telegram_with_the_cli(world: World, cli_env: dict[str, str]) -> None:
    """`erase --email` finds contacts of channel email whatever the case; `erase --telegram` the chat."""
    await create_survey(
        world.service.db,
        world.service.flows,
        NewSurvey("support-csat", "email", "Kim@Example.com", ticket="T-9"),
        now=world.service.clock(),
        ttl=world.service.survey_ttl,
    )
    mail = await asyncio.to_thread(invoke, ["erase", "--email", "kim@example.COM", "--yes"], cli_env)
    chat = await asyncio.to_thread(invoke, ["erase", "--telegram", str(CHAT), "--yes"], cli_env)
    counted = [dict(line.split() for line in ran.stdout.splitlines()[1:]) for ran in (mail, chat)]
    assert [(0, "1", "1"), (0, "1", "1")] == [
        (ran.code, c["contacts"], c["erased_contacts"]) for ran, c in zip((mail, chat), counted, strict=True)
    ]
    left = traces_in(await dump(world.service))
    assert ([], []) == (
        [t for t in left if t[1] in (str(CHAT), CHAT_COMMENT)],
        [row for row in (await dump(world.service))["contacts"] if "Kim@Example.com" in str(row)],
    )
