"""The `afterword` command line.

Each command imports what it uses when it runs: `afterword --help` and `afterword report`
start without matplotlib, python-telegram-bot, twilio or the web app (tests/bot/test_startup.py,
bench/startup.py). Only Typer and what the help needs are imported here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bot.cli import privacy
from bot.cli.admin import apikey_app, db_app, flows_app, staff_app, telegram_app
from bot.cli.audit import audit
from bot.cli.support import err, errors, fail, load, open_database, open_service, options, run

if TYPE_CHECKING:
    from bot.channels.telegram.bot import TelegramBot
    from bot.reports import CsiSpec
    from bot.settings import Settings
    from scoring.report import Report

T = TypeVar("T")

# Help and usage errors in Click's plain form (rich_markup_mode=None, here and on each sub-app):
# Typer's boxed form imports rich's Markdown and traceback modules, 85 ms of the 160 ms that
# `afterword --help` cost (bench/startup.py), and draws an error as a five-line box.
app = typer.Typer(
    rich_markup_mode=None,
    help="Afterword: ask customers how a support contact went, and tell the team how it is doing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
app.add_typer(db_app, name="db")
app.add_typer(flows_app, name="flows")
app.add_typer(staff_app, name="staff")
app.add_typer(telegram_app, name="telegram")
app.add_typer(apikey_app, name="apikey")
app.command("audit")(audit)


def _version(value: bool) -> None:
    if value:
        from bot.web.app import VERSION

        typer.echo(f"afterword {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Say on stderr which database the command opens: the SQLite file's absolute path, "
            "or the PostgreSQL URL without its password.",
        ),
    ] = False,
) -> None:
    """Afterword: ask customers how a support contact went, and tell the team how it is doing."""
    options.verbose = verbose  # set on every run: in-process test runs share this module


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: PORT or 8000).")] = None,
    telegram_polling: Annotated[
        bool,
        typer.Option(
            "--telegram-polling",
            help="Fetch Telegram updates by long polling instead of the webhook: "
            "for one process without a public URL.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes that share the port, each with the web app, the Telegram webhook and "
            "the scheduler. More than one needs PostgreSQL and the Telegram webhook.",
        ),
    ] = 1,
) -> None:
    """Start the web app (webhooks, API, health check) with uvicorn, and the Telegram bot.

    A SQLite database is made (in a folder that exists) and migrated on start; a
    PostgreSQL one must be migrated first with `afterword db upgrade`. Each channel says in one line whether it is on.
    With --workers N, uvicorn runs N processes on one port; they share the surveys and
    jobs through PostgreSQL, so any of them can take any webhook.

    Example: afterword serve --host 0.0.0.0 --port 8080 --workers 2
    """
    import uvicorn

    from bot.errors import ConfigError
    from bot.logs import install_logging
    from bot.web.app import create_app
    from bot.web.server import allow_open_files, serve_workers, server_config

    if port is not None and not 1 <= port <= 65535:
        fail(f"--port: {port} is not a port; use 1 to 65535", 2)
    if workers < 1:
        fail(f"--workers: {workers} is not a number of processes; use 1 or more", 2)
    if workers > 1 and telegram_polling:
        fail("--workers: only one process may long-poll Telegram; use --workers 1 or the webhook", 2)
    settings = load()
    if workers > 1 and settings.database.get_backend_name() == "sqlite":
        fail(
            "--workers: more than one process needs PostgreSQL "
            "(DATABASE_URL=postgresql+asyncpg://…); SQLite serves one process",
            2,
        )
    host, port = host or settings.host, port or settings.port

    async def _serve() -> None:
        # One event loop for start-up checks and serving: pooled connections belong to it.
        # serve is the one command (besides `db upgrade`) that may make a new SQLite file.
        service = await open_service(settings, create=True)
        telegram = None
        try:
            if settings.telegram_enabled:
                from bot.channels.telegram.bot import TelegramBot

                telegram = TelegramBot(service, polling=telegram_polling)
                if workers == 1:
                    await telegram.start()
                else:  # each worker starts its own bot: here only check the token
                    await telegram.check()
            if settings.twilio_enabled and settings.public_base_url is None:
                raise ConfigError(
                    "PUBLIC_BASE_URL", "required with Twilio: webhooks are signed over this address"
                )
            _print_channels(settings, telegram, telegram_polling, workers)
            if workers > 1:
                return  # the workers open their own Service and bot; this process only supervises
            web = create_app(settings, service, telegram=telegram)
            config = server_config(web, settings, host=host, port=port)
            install_logging(settings)  # after uvicorn's Config set up its own loggers
            await uvicorn.Server(config).serve()
        finally:
            if telegram is not None:
                await telegram.stop()
            await service.close()

    try:
        allow_open_files(settings.max_connections)
    except ConfigError as exc:
        fail(str(exc), 2)
    run(_serve())
    if workers > 1:
        # Each worker builds its app with create_app_from_env, which redacts secrets in its logs.
        config = server_config(
            "bot.web.app:create_app_from_env", settings, host=host, port=port, factory=True, workers=workers
        )
        if not serve_workers(config):
            fail("a worker could not start (its error is above); all workers were stopped", 1)


def _print_channels(settings: Settings, telegram: TelegramBot | None, polling: bool, workers: int) -> None:
    """One line per channel, and one for the scheduler, as `serve` starts."""
    from bot.channels.registry import twilio_summary

    each = f" in each of {workers} workers" if workers > 1 else ""
    if telegram is not None:
        from bot.channels.telegram.bot import WEBHOOK_PATH

        mode = "long polling" if polling else f"webhook at {WEBHOOK_PATH}{each}"
        alerts = settings.telegram_alert_chat_id
        err.print(
            f"Telegram: on as @{telegram.application.bot.username} ({mode}; "
            + (f"detractor alerts to chat {alerts})" if alerts else "no TELEGRAM_ALERT_CHAT_ID, no alerts)")
        )
    else:
        err.print("Telegram: off (TELEGRAM_BOT_TOKEN is not set)")
    err.print(twilio_summary(settings))
    err.print(
        f"Scheduler: on{each} (quiet hours {settings.quiet_hours}, throttle {settings.throttle_days} days, "
        f"reminder after {settings.reminder_after_hours:g} h)"
        + ("; jobs are claimed with FOR UPDATE SKIP LOCKED, each done once" if workers > 1 else "")
    )


@app.command()
def chat(
    flow: Annotated[
        str | None,
        typer.Option(
            help="Flow id (see `afterword flows list`; default: the open survey's, else support-csat)."
        ),
    ] = None,
    lang: Annotated[
        str | None, typer.Option(help="One of the flow's languages, e.g. de or en (default: the flow's).")
    ] = None,
    ticket: Annotated[str | None, typer.Option(help="Ticket reference stored with the answers.")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent who handled the ticket.")] = None,
    team: Annotated[str | None, typer.Option(help="Team of the agent.")] = None,
    contact: Annotated[
        str | None,
        typer.Option(
            help="Who answers; an open survey of this contact is resumed, and refused if it differs "
            "from --flow, --lang, --ticket, --agent or --team (default: your login)."
        ),
    ] = None,
    new: Annotated[
        bool,
        typer.Option("--new", help="Start a new survey even if one is open (that one becomes incomplete)."),
    ] = False,
) -> None:
    """Answer a survey in the terminal; answers may also be piped in, one per line.

    Example: printf '2\\n1\\n2\\nsehr freundlich\\n' | afterword chat --flow support-csat --lang de
    """
    from bot.channels.console import ChatRequest
    from bot.channels.console import chat as run_chat

    settings = load()
    request = ChatRequest(
        contact=contact or _login(),
        flow_id=flow,
        language=lang,
        ticket=ticket,
        agent=agent,
        team=team,
        new=new,
    )

    async def _chat() -> str:
        service = await open_service(settings)
        try:
            result = await run_chat(
                service, request, stdin=sys.stdin, out=sys.stdout, echo=not sys.stdin.isatty()
            )
        finally:
            await service.close()
        return result.status

    run(_chat())


@app.command()
def report(
    since: Annotated[
        str | None, typer.Option(help="Period ending now: 7d, 30d, 90d, 365d or any Nd (default 30d).")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First day, e.g. 2026-10-01 (instead of --since).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day, included (default: today).")] = None,
    by: Annotated[
        str | None, typer.Option(help="Group by agent, team, channel, flow, language or question.")
    ] = None,
    trend: Annotated[str | None, typer.Option(help="Trend buckets: day, week or month.")] = None,
    rule: Annotated[
        str, typer.Option(help="CSAT rule: top2 (two best points) or top1 (best point).")
    ] = "top2",
    fmt: Annotated[str, typer.Option("--format", help="table, json, csv or md.")] = "table",
    csi_file: Annotated[
        Path | None, typer.Option("--csi", help="YAML with CSI attributes: question, weight, expected.")
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            help="Language of the table and Markdown: de or en (default: LC_ALL, LC_MESSAGES or LANG, "
            "else STAFF_LANGUAGE). JSON and CSV do not change.",
        ),
    ] = None,
) -> None:
    """Show CSAT, NPS and CES with 95 % intervals, targets and change against the previous period.

    Example: afterword report --since 90d --by agent --trend week --format json
    """
    import os
    from datetime import UTC, datetime

    from bot.report_format import FORMATS, render
    from bot.reports import build_report, report_query
    from bot.staff_language import STAFF_LANGUAGES, from_locale, staff_language

    if fmt not in FORMATS:
        fail(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}", 2)
    if lang is not None and lang not in STAFF_LANGUAGES:
        fail(f"--lang: {lang!r} is not one of {', '.join(STAFF_LANGUAGES)}", 2)
    csi = _csi_specs(csi_file) if csi_file is not None else ()
    with errors():  # every option is checked before the database is opened
        query = report_query(
            now=datetime.now(UTC), since=since, from_=from_, to=to, by=by, trend=trend, rule=rule, csi=csi
        )
    settings = load()

    async def _report() -> Report:
        # The database alone: a report needs no flow files, and a current schema no migration.
        db = await open_database(settings)
        try:
            return await build_report(db, query, settings.targets)
        finally:
            await db.dispose()

    data = run(_report())
    language = staff_language(lang, from_locale(os.environ), default=settings.staff_language)
    width = _terminal_width() if fmt == "table" else 120
    typer.echo(render(data, fmt, width=width, language=language).rstrip("\n"))


def _csi_specs(path: Path) -> tuple[CsiSpec, ...]:
    """The CSI attributes in ``path``, or one line naming the file and exit 2."""
    from bot.errors import ReportError
    from bot.reports import load_csi_config

    try:
        return load_csi_config(path)
    except ReportError as exc:
        fail(f"--csi: {exc.message}", exc.exit_code)


def _terminal_width() -> int:
    from rich.console import Console

    return Console().width


@app.command()
def chart(
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    since: Annotated[str, typer.Option(help="Period ending now: 7d, 30d, 90d, 365d or any Nd.")] = "90d",
    trend: Annotated[str, typer.Option(help="Buckets: day, week or month.")] = "week",
    lang: Annotated[str, typer.Option(help="Chart language: de or en.")] = "en",
) -> None:
    """Draw the CSAT and NPS trend with 95 % bands and target lines as a PNG.

    Example: afterword chart --since 90d --trend week --out trend.png
    """
    from datetime import UTC, datetime

    from bot.reports import build_report, report_query, trend_points
    from scoring.chart import trend_chart

    if lang not in ("de", "en"):
        fail(f"--lang: {lang!r} is not de or en", 2)
    if not out.parent.is_dir():
        fail(f"--out: {out}: there is no folder {out.parent}", 2)
    with errors():  # every option is checked before the database is opened
        query = report_query(now=datetime.now(UTC), since=since, trend=trend)
    settings = load()

    async def _chart() -> bytes:
        db = await open_database(settings)  # a chart needs no flow files
        try:
            data = await build_report(db, query, settings.targets)
        finally:
            await db.dispose()
        return trend_chart(trend_points(data), targets=settings.targets, language=lang)  # type: ignore[arg-type]

    png = run(_chart())
    try:
        out.write_bytes(png)
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror}")
    typer.echo(f"wrote {out} ({len(png):,} bytes)")


@app.command("import")
def import_(
    path: Annotated[
        Path, typer.Argument(help="CSV file, one answer per row, columns separated by , ; or tab.")
    ],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Import the good rows even if some are bad.")
    ] = False,
    encoding: Annotated[
        str, typer.Option(help="The file's encoding: utf-8, cp1252, latin-1 or iso-8859-15.")
    ] = "utf-8",
) -> None:
    """Import answers collected with other tools from CSV; response_ids seen before are skipped.

    Required columns: response_id, submitted_at (ISO 8601), metric (csat, nps, ces), score.
    Optional: ticket_id, channel, agent, team, flow, language, question, comment,
    scale_min, scale_max, best (high or low). A bad row stops the import with its line
    and reason, and nothing is stored, unless --skip-bad is given. The file is UTF-8 (a
    byte order mark is fine) unless --encoding names another.

    Example: afterword import answers.csv
    """
    from rich.progress import Progress

    from bot.importer import check_file, encoding_name, import_csv

    try:
        encoding = encoding_name(encoding)
    except ValueError as exc:
        fail(f"--encoding: {exc}", 2)
    with errors():  # a file that cannot be read fails before the database is opened
        check_file(path, encoding)
    settings = load()

    async def _import() -> Any:
        service = await open_service(settings)
        try:
            with Progress(console=err, transient=True) as bar:
                task = bar.add_task("importing", total=None)
                return await import_csv(
                    service.db,
                    path,
                    skip_bad=skip_bad,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    encoding=encoding,
                )
        finally:
            await service.close()

    result = run(_import())
    for problem in result.problems:
        err.print(f"skipped {problem}", markup=False)
    typer.echo(
        f"{result.added} answer(s) added, {result.already_there} already there, {result.skipped_bad} bad row(s) skipped"
    )


@app.command()
def trigger(
    channel: Annotated[str, typer.Option(help="telegram, sms, whatsapp, voice or web.")],
    ticket: Annotated[str, typer.Option(help="The ticket id; one survey per ticket and flow.")],
    to: Annotated[
        str | None,
        typer.Option(help="E.164 phone (sms, whatsapp, voice) or Telegram chat id; none for links."),
    ] = None,
    agent: Annotated[str | None, typer.Option(help="The agent who handled the ticket.")] = None,
    team: Annotated[str | None, typer.Option(help="The agent's team.")] = None,
    flow: Annotated[str | None, typer.Option(help="Flow id (default: DEFAULT_FLOW).")] = None,
    lang: Annotated[
        str | None, typer.Option(help="de or en (default: the contact's, else the flow's).")
    ] = None,
    delay: Annotated[str | None, typer.Option(help="Wait before sending: 90s, 15m, 1h, 2d.")] = None,
) -> None:
    """Trigger a survey for a ticket, as POST /api/surveys does.

    The survey is queued; a running `afterword serve` or `afterword worker` sends it when it
    is due, after the opt-out, throttle and quiet-hour checks. Link channels print the link.

    Example: afterword trigger --channel sms --to +4915112345678 --ticket T-1 --agent anna --delay 1h
    """
    from pydantic import ValidationError

    from bot.channels.registry import configured
    from bot.triggers import SurveyRequest, survey_links
    from bot.triggers import trigger as make

    settings = load()
    try:
        request = SurveyRequest(
            ticket_id=ticket,
            channel=channel,
            to=to,
            agent=agent,
            team=team,
            flow=flow,
            language=lang,
            delay=delay,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{first['loc'][0]}: {first['msg']}", 2)

    async def _trigger() -> Any:
        service = await open_service(settings)
        try:
            username = await _telegram_username(service) if channel == "telegram" and to is None else None

            base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
            link_for = survey_links(base, username)
            return await make(
                service, request, channels=dict.fromkeys(configured(settings)), link_for=link_for
            )
        finally:
            await service.close()

    made = run(_trigger())
    if made.survey_id is None:
        typer.echo(f"skipped: the {channel} contact has opted out of surveys")
        return
    verb = "created" if made.created else "exists"
    when = f", send at {made.send_at:%Y-%m-%d %H:%M} UTC" if made.send_at else ""
    typer.echo(f"{verb}: survey {made.survey_id} for {made.ticket_id} ({made.flow}, {made.status}{when})")
    if made.link:
        typer.echo(made.link)


async def _telegram_username(service: Any) -> str:
    from bot.channels.telegram.bot import TelegramBot

    bot = TelegramBot(service, receive=False)
    await bot.check()
    try:
        return str(bot.application.bot.username)
    finally:
        await bot.application.shutdown()


@app.command()
def worker() -> None:
    """Send due surveys, reminders and alerts, without the web app.

    Run as many as you like against PostgreSQL: jobs are claimed with FOR UPDATE SKIP
    LOCKED, and each survey is sent at most once. `afterword serve` runs the same scheduler itself.

    Example: afterword worker
    """
    import asyncio
    import contextlib
    import signal

    from bot.channels.registry import open_channels
    from bot.logs import install_logging
    from bot.scheduler import Scheduler, worker_name

    settings = load()
    install_logging(settings)

    async def _work() -> None:
        service = await open_service(settings)
        telegram = twilio = None
        try:
            if settings.telegram_enabled:
                from bot.channels.telegram.bot import TelegramBot

                telegram = TelegramBot(service, receive=False)
                await telegram.start()
            if settings.twilio_enabled:
                from bot.channels.twilio import TwilioAccount

                twilio = TwilioAccount(settings)
            channels = open_channels(service, telegram=telegram, twilio=twilio)
            names = ", ".join(sorted(channels)) or "none (set TELEGRAM_BOT_TOKEN or TWILIO_* to send)"
            note = " (SQLite: run one process only)" if service.db.is_sqlite else ""
            err.print(f"worker {worker_name()}: channels {names}{note}")
            task = asyncio.create_task(Scheduler(service, channels).run())
            loop = asyncio.get_running_loop()
            for stop in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(stop, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            if twilio is not None:
                await twilio.close()
            if telegram is not None:
                await telegram.stop()
            await service.close()

    run(_work())
    err.print("worker stopped")


@app.command()
def demo(
    database: Annotated[
        Path, typer.Option("--database", help="The SQLite file to create (a path, not a URL).")
    ] = Path("afterword-demo.db"),
    months: Annotated[int, typer.Option(help="Months of surveys, ending three days ago: 1 to 24.")] = 4,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed on the same day gives the same answers.")
    ] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it is there.")] = False,
    web_login: Annotated[
        str, typer.Option("--web-login", help="The dashboard login to create, a manager.")
    ] = "demo",
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the login's password from standard input (default: make one up and print it).",
        ),
    ] = False,
) -> None:
    """Fill a new SQLite file with months of made-up surveys and answers, to see Afterword in use.

    Six agents in three teams, five channels, the flows support-csat, nps and ces, German and
    English, comments, unanswered and undelivered surveys. Everything goes through the paths
    real answers take. The demo never touches DATABASE_URL: made-up answers must not mix with
    real ones, so it writes only a SQLite file of its own (PostgreSQL is not offered). At the
    end it prints the command that serves the file and the dashboard login.

    Example: afterword demo --force && DATABASE_URL=sqlite+aiosqlite:///afterword-demo.db afterword serve
    """
    import re
    import shlex
    import time
    from datetime import UTC, datetime

    from rich.progress import Progress

    from bot.cli.demo import build_demo
    from bot.store.db import sqlite_path
    from bot.web.auth import MIN_PASSWORD_LENGTH

    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(database)):  # Path has made :// into :/
        fail(
            "--database: give the path of a SQLite file, not a URL: the demo writes no database server",
            2,
        )
    if not 1 <= months <= 24:
        fail(f"--months: {months} is not 1 to 24", 2)
    if not database.parent.is_dir():
        fail(f"--database: there is no folder {database.parent} for {database.name}", 2)
    if database.is_dir():
        fail(f"--database: {database} is a folder; give a file path", 2)
    if database.exists() and not force:
        fail(f"--database: {database} is there already; add --force to replace it", 1)
    settings = load()
    real = sqlite_path(settings.database)
    if real is not None and real == database.resolve():
        fail(f"--database: {database} is DATABASE_URL's database; give the demo a file of its own", 2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import secrets

        password = secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_LENGTH:
        fail(
            f"--password-stdin: the password has {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}",
            2,
        )
    files = [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    for file in files:
        file.unlink(missing_ok=True)

    async def _build() -> Any:
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("making surveys", total=None)
            return await build_demo(
                database,
                now=datetime.now(UTC),
                months=months,
                seed=seed,
                login=(web_login, password),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    started = time.process_time()
    try:
        made = run(_build())
    except BaseException:  # a half-made demo would only be refused next time: leave nothing behind
        for file in files:
            file.unlink(missing_ok=True)
        raise
    statuses = ", ".join(f"{n} {status}" for status, n in made.statuses.most_common())
    typer.echo(
        f"wrote {database}: {made.surveys} surveys from {made.first_day} to {made.last_day} "
        f"({statuses}), {made.answers} answers, in {time.process_time() - started:.1f} s of CPU"
    )
    typer.echo(f"dashboard login: {web_login}" + ("" if password_stdin else f"  password: {password}"))
    url = f"sqlite+aiosqlite:///{database}"
    script = ".venv/bin/afterword" if Path(".venv/bin/afterword").exists() else "afterword"
    # Channels off: the demo's numbers and chat ids are made up, and a bot token in .env must
    # not point a real bot's webhook at a demo.
    typer.echo(
        "look at it (channels off, the customers are made up):\n"
        f"  DATABASE_URL={shlex.quote(url)} TELEGRAM_BOT_TOKEN= TWILIO_AUTH_TOKEN= "
        f"{script} serve --host 127.0.0.1 --port 8000\n"
        "  then open http://127.0.0.1:8000/dashboard"
    )


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console"


# A person's data (bot/cli/privacy.py), listed after the commands above.
app.command()(privacy.erase)
app.command("export-person")(privacy.export_person)
app.command()(privacy.housekeeping)


def main() -> None:
    """Entry point of the `afterword` script."""
    app()
