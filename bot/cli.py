"""The `afterword` command line."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bot.errors import AfterwordError
from bot.settings import Settings, load_settings
from flows.errors import FlowError, FlowInvalid

T = TypeVar("T")

app = typer.Typer(
    help="Afterword: ask customers how a support contact went, and tell the team how it is doing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
flows_app = typer.Typer(help="List and check survey flows.", no_args_is_help=True)
staff_app = typer.Typer(help="Manage who may use the staff commands.", no_args_is_help=True)
telegram_app = typer.Typer(help="Set up the Telegram bot.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(flows_app, name="flows")
app.add_typer(staff_app, name="staff")
app.add_typer(telegram_app, name="telegram")

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]Error:[/] {message}", markup=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except AfterwordError as exc:
        _fail(str(exc), exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    """Our own errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        yield
    except FlowInvalid as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        _fail(f"flow file {exc.source} is invalid ({len(exc.issues)} problem(s))")
    except (AfterwordError, FlowError) as exc:
        _fail(str(exc), getattr(exc, "exit_code", 1))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion under ``_errors``."""
    with _errors():
        return asyncio.run(coro)
    raise AssertionError("unreachable: _errors exits on every error")


def _version(value: bool) -> None:
    if value:
        from bot.app import VERSION

        typer.echo(f"afterword {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Afterword: ask customers how a support contact went, and tell the team how it is doing."""


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
) -> None:
    """Start the web app (webhooks, API, health check) with uvicorn, and the Telegram bot.

    A SQLite database is migrated on start; a PostgreSQL one must be migrated first
    with `afterword db upgrade`. Each channel says in one line whether it is on.

    Example: afterword serve --host 0.0.0.0 --port 8080
    """
    import uvicorn

    from bot.app import create_app
    from bot.channels.registry import twilio_summary
    from bot.errors import ConfigError
    from bot.phones import install_log_masking
    from bot.service import Service

    settings = _settings()

    async def _serve() -> None:
        # One event loop for start-up checks and serving: pooled connections belong to it.
        service = await Service.open(settings)
        telegram = None
        try:
            if settings.telegram_enabled:
                from bot.telegram_bot import WEBHOOK_PATH, TelegramBot

                telegram = TelegramBot(service, polling=telegram_polling)
                await telegram.start()
                mode = "long polling" if telegram_polling else f"webhook at {WEBHOOK_PATH}"
                alerts = settings.telegram_alert_chat_id
                err.print(
                    f"Telegram: on as @{telegram.application.bot.username} ({mode}; "
                    + (
                        f"detractor alerts to chat {alerts})"
                        if alerts
                        else "no TELEGRAM_ALERT_CHAT_ID, no alerts)"
                    )
                )
            else:
                err.print("Telegram: off (TELEGRAM_BOT_TOKEN is not set)")
            if settings.twilio_enabled and settings.public_base_url is None:
                raise ConfigError(
                    "PUBLIC_BASE_URL", "required with Twilio: webhooks are signed over this address"
                )
            err.print(twilio_summary(settings))
            config = uvicorn.Config(
                create_app(settings, service, telegram=telegram),
                host=host or settings.host,
                port=port or settings.port,
                log_level=settings.log_level.lower(),
            )
            install_log_masking(settings.log_level)  # after uvicorn's Config set up its own loggers
            await uvicorn.Server(config).serve()
        finally:
            if telegram is not None:
                await telegram.stop()
            await service.close()

    _run(_serve())


@app.command()
def chat(
    flow: Annotated[str, typer.Option(help="Flow id (see `afterword flows list`).")] = "support-csat",
    lang: Annotated[str | None, typer.Option(help="Language: de or en (default: the flow's).")] = None,
    ticket: Annotated[str | None, typer.Option(help="Ticket reference stored with the answers.")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent who handled the ticket.")] = None,
    team: Annotated[str | None, typer.Option(help="Team of the agent.")] = None,
    contact: Annotated[
        str | None,
        typer.Option(help="Who answers; an open survey of this contact is resumed (default: your login)."),
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new survey even if one is open.")] = False,
) -> None:
    """Answer a survey in the terminal; answers may also be piped in, one per line.

    Example: printf '2\\n1\\n2\\nsehr freundlich\\n' | afterword chat --flow support-csat --lang de
    """
    from bot.channels.console import chat as run_chat
    from bot.service import Service
    from bot.surveys import NewSurvey

    settings = _settings()
    request = NewSurvey(
        flow_id=flow,
        channel="console",
        address=contact or _login(),
        ticket=ticket,
        agent=agent,
        team=team,
        language=lang,
    )

    async def _chat() -> str:
        service = await Service.open(settings)
        try:
            result = await run_chat(
                service, request, stdin=sys.stdin, out=sys.stdout, echo=not sys.stdin.isatty(), new=new
            )
        finally:
            await service.close()
        return result.status

    _run(_chat())


@app.command()
def report(
    since: Annotated[str, typer.Option(help="Period ending now: 7d, 30d, 90d, 365d or any Nd.")] = "30d",
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
) -> None:
    """Show CSAT, NPS and CES with 95 % intervals, targets and change against the previous period.

    Example: afterword report --since 90d --by agent --trend week --format json
    """
    from bot.report_format import FORMATS, render
    from bot.reports import build_report, report_query
    from bot.service import Service

    if fmt not in FORMATS:
        _fail(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}", 2)
    settings = _settings()

    async def _report() -> dict[str, Any]:
        service = await Service.open(settings)
        try:
            query = report_query(
                now=service.clock(), since=since, from_=from_, to=to, by=by, trend=trend, rule=rule
            )
            return await build_report(service.db, query, settings.targets)
        finally:
            await service.close()

    typer.echo(render(_run(_report()), fmt, width=Console().width).rstrip("\n"))


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
    from bot.reports import build_report, report_query, trend_points
    from bot.service import Service
    from scoring.chart import trend_chart

    if lang not in ("de", "en"):
        _fail(f"--lang: {lang!r} is not de or en", 2)
    settings = _settings()

    async def _chart() -> bytes:
        service = await Service.open(settings)
        try:
            query = report_query(now=service.clock(), since=since, trend=trend)
            data = await build_report(service.db, query, settings.targets)
        finally:
            await service.close()
        return trend_chart(trend_points(data), targets=settings.targets, language=lang)  # type: ignore[arg-type]

    png = _run(_chart())
    try:
        out.write_bytes(png)
    except OSError as exc:
        _fail(f"--out: cannot write {out}: {exc.strerror}")
    typer.echo(f"wrote {out} ({len(png):,} bytes)")


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="CSV file, UTF-8, one answer per row.")],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Import the good rows even if some are bad.")
    ] = False,
) -> None:
    """Import answers collected with other tools from CSV; response_ids seen before are skipped.

    Required columns: response_id, submitted_at (ISO 8601), metric (csat, nps, ces), score.
    Optional: ticket_id, channel, agent, team, flow, language, question, comment,
    scale_min, scale_max, best (high or low). A bad row stops the import with its line
    and reason, and nothing is stored, unless --skip-bad is given.

    Example: afterword import answers.csv
    """
    from rich.progress import Progress

    from bot.importer import import_csv
    from bot.service import Service

    settings = _settings()

    async def _import() -> Any:
        service = await Service.open(settings)
        try:
            with Progress(console=err, transient=True) as bar:
                task = bar.add_task("importing", total=None)
                return await import_csv(
                    service.db,
                    path,
                    skip_bad=skip_bad,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        finally:
            await service.close()

    result = _run(_import())
    for problem in result.problems:
        err.print(f"skipped {problem}", markup=False)
    typer.echo(
        f"{result.added} answer(s) added, {result.already_there} already there, {result.skipped_bad} bad row(s) skipped"
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to DATABASE_URL (safe to run again).

    Example: DATABASE_URL=postgresql+asyncpg://afterword@db/afterword afterword db upgrade
    """
    from bot.db import Database

    settings = _settings()

    async def _upgrade() -> str | None:
        db = Database(settings.database)
        try:
            await db.upgrade()
            return await db.revision()
        finally:
            await db.dispose()

    revision = _run(_upgrade())
    typer.echo(f"database {settings.database.render_as_string(hide_password=True)} is at revision {revision}")


@db_app.command("status")
def db_status() -> None:
    """Show the schema revision of DATABASE_URL and the one this version needs.

    Example: afterword db status
    """
    from bot.db import Database, head_revision

    settings = _settings()

    async def _status() -> str | None:
        db = Database(settings.database)
        try:
            return await db.revision()
        finally:
            await db.dispose()

    current, head = _run(_status()), head_revision()
    typer.echo(f"current: {current or 'empty'}\nneeded:  {head}")
    if current != head:
        raise typer.Exit(1)


@flows_app.command("list")
def flows_list() -> None:
    """List the flows Afterword knows: built-in ones and those in FLOWS_DIR.

    Example: afterword flows list
    """
    from flows.loader import load_flows

    settings = _settings()
    with _errors():
        flows = load_flows(settings.flows_dir)
    table = Table("id", "version", "languages", "questions", "title")
    for flow in sorted(flows.values(), key=lambda f: f.id):
        table.add_row(
            flow.id,
            str(flow.version),
            ", ".join(flow.languages),
            " → ".join(q.id for q in flow.questions),
            flow.title or "",
        )
    Console(highlight=False).print(table)


@flows_app.command("check")
def flows_check(
    paths: Annotated[list[Path], typer.Argument(help="Flow files or folders of them.", exists=True)],
) -> None:
    """Validate flow files; print every problem with file, line and field, exit 1 if any.

    Example: afterword flows check flows/builtin my-flows/
    """
    from flows.loader import check_paths

    issues = check_paths(paths)
    for issue in issues:
        typer.echo(str(issue), err=True)
    if issues:
        _fail(f"{len(issues)} problem(s) found")
    typer.echo(f"ok: {len(paths)} path(s) checked, no problems")


@staff_app.command("add")
def staff_add(
    telegram: Annotated[int, typer.Option("--telegram", help="The person's Telegram user id (a number).")],
    role: Annotated[str, typer.Option(help="manager (/report and /survey) or agent (/survey only).")],
    name: Annotated[
        str | None,
        typer.Option(help="Name stored as the agent of surveys they create (default: Telegram name)."),
    ] = None,
) -> None:
    """Give a Telegram user a staff role, or change it.

    Telegram user ids are numbers; a user sees theirs by sending /start to @userinfobot.

    Example: afterword staff add --telegram 123456789 --role manager --name Anna
    """
    from bot.service import Service
    from bot.settings import STAFF_ROLES
    from bot.staff import add_staff

    if role not in STAFF_ROLES:
        _fail(f"--role: {role!r} is not one of {', '.join(STAFF_ROLES)}", 2)
    settings = _settings()

    async def _add() -> bool:
        service = await Service.open(settings)
        try:
            return await add_staff(
                service.db,
                telegram_id=telegram,
                role=role,
                name=name,
                now=service.clock(),
            )
        finally:
            await service.close()

    created = _run(_add())
    typer.echo(f"{'added' if created else 'updated'}: Telegram user {telegram} is {role}")


@staff_app.command("remove")
def staff_remove(
    telegram: Annotated[int, typer.Option("--telegram", help="The Telegram user id to remove.")],
) -> None:
    """Take the staff role from a Telegram user added with `staff add`.

    Example: afterword staff remove --telegram 123456789
    """
    from bot.service import Service
    from bot.staff import remove_staff

    settings = _settings()

    async def _remove() -> bool:
        service = await Service.open(settings)
        try:
            return await remove_staff(service.db, telegram)
        finally:
            await service.close()

    if not _run(_remove()):
        hint = " (it is in TELEGRAM_STAFF: remove it there)" if telegram in settings.telegram_staff else ""
        _fail(f"--telegram: no staff member {telegram} was added with `staff add`{hint}")
    typer.echo(f"removed: Telegram user {telegram}")


@staff_app.command("list")
def staff_list() -> None:
    """List the staff: added with `staff add` and from TELEGRAM_STAFF.

    Example: afterword staff list
    """
    from bot.service import Service
    from bot.staff import list_staff

    settings = _settings()

    async def _list() -> list[Any]:
        service = await Service.open(settings)
        try:
            return await list_staff(service.db, settings)
        finally:
            await service.close()

    members = _run(_list())
    table = Table("telegram user", "role", "name", "from")
    for member in members:
        table.add_row(str(member.telegram_id), member.role, member.name or "", member.source)
    Console(highlight=False).print(table)


@telegram_app.command("set-webhook")
def telegram_set_webhook() -> None:
    """Tell Telegram to post updates to PUBLIC_BASE_URL/telegram/webhook, with the secret.

    Needs TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET and PUBLIC_BASE_URL (https).

    Example: afterword telegram set-webhook
    """
    from bot.errors import ConfigError
    from bot.service import Service

    settings = _settings()
    if not settings.telegram_enabled:
        _fail(str(ConfigError("TELEGRAM_BOT_TOKEN", "not set; the Telegram channel is off")), 2)

    async def _set() -> str:
        from bot.telegram_bot import TelegramBot

        service = await Service.open(settings)
        try:
            bot = TelegramBot(service)
            await bot.application.initialize()
            try:
                return await bot.set_webhook()
            finally:
                await bot.application.shutdown()
        finally:
            await service.close()

    url = _run(_set())
    typer.echo(f"webhook set: {url} (updates: message, callback_query)")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console"


def main() -> None:
    """Entry point of the `afterword` script."""
    app()
