"""Administration commands: the database, flows, staff, the Telegram webhook, API keys."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.support import err, errors, fail, load, open_service, run, say_database, with_service

if TYPE_CHECKING:
    from bot.service import Service


def _group(about: str) -> typer.Typer:
    """A sub-command group; plain Click help, as the app's (see bot/cli/main.py)."""
    return typer.Typer(help=about, no_args_is_help=True, rich_markup_mode=None)


db_app = _group("Manage the database schema.")
flows_app = _group("List and check survey flows.")
staff_app = _group("Manage who may use the staff commands.")
telegram_app = _group("Set up the Telegram bot.")
apikey_app = _group("Manage API keys for /api/….")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to DATABASE_URL (safe to run again).

    A SQLite file is made if it is not there yet, but never its folder: a missing folder
    is refused, as it is most often a typo or a volume that is not mounted.

    Example: DATABASE_URL=postgresql+asyncpg://afterword@db/afterword afterword db upgrade
    """
    from bot.store.db import Database, describe

    settings = load()
    say_database(settings)

    async def _upgrade() -> str | None:
        db = Database(settings.database)
        try:
            await db.upgrade()
            return await db.revision()
        finally:
            await db.dispose()

    revision = run(_upgrade())
    typer.echo(f"database {describe(settings.database)} is at revision {revision}")


@db_app.command("status")
def db_status() -> None:
    """Show which database DATABASE_URL is, its schema revision and the one this version needs.

    A SQLite file that is not there is refused (and not made): exit 2.

    Example: afterword db status
    """
    from bot.store.db import Database, describe, head_revision, require_sqlite_file

    settings = load()  # no --verbose line: the output names the database, and so does any error
    with errors():  # before connecting: connecting would make a missing SQLite file
        require_sqlite_file(settings.database, create=False)

    async def _status() -> str | None:
        db = Database(settings.database)
        try:
            return await db.revision()
        finally:
            await db.dispose()

    current, head = run(_status()), head_revision()
    typer.echo(f"database: {describe(settings.database)}\ncurrent:  {current or 'empty'}\nneeded:   {head}")
    if current != head:
        raise typer.Exit(1)


@flows_app.command("list")
def flows_list() -> None:
    """List the flows Afterword knows: built-in ones and those in FLOWS_DIR.

    Example: afterword flows list
    """
    from rich.console import Console
    from rich.table import Table

    from flows.loader import load_flows

    settings = load()
    with errors():
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

    When DATABASE_URL names a database that exists and is migrated, also warn about each flow
    whose definition changed while its `version` did not (surveys would keep the recorded
    one); without such a database nothing is said about versions, and none is made.

    Example: afterword flows check flows/builtin my-flows/
    """
    from flows.loader import check_paths, valid_flows

    issues = check_paths(paths)
    for issue in issues:
        typer.echo(str(issue), err=True)
    for warning in run(_version_drift(valid_flows(paths))):
        typer.echo(f"warning: {warning}", err=True)
    if issues:
        fail(f"{len(issues)} problem(s) found")
    typer.echo(f"ok: {len(paths)} path(s) checked, no problems")


async def _version_drift(flows: Any) -> list[str]:
    """The flows recorded in DATABASE_URL under their version with another definition; [] without one."""
    from bot.errors import AfterwordError
    from bot.flow_versions import recorded_drift
    from bot.settings import load_settings
    from bot.store.db import Database

    try:
        settings = load_settings()
        db = await Database.open(settings.database, create=False, migrate_sqlite=False)
    except AfterwordError:  # no database, or not migrated: versions cannot be compared
        return []
    try:
        return await recorded_drift(db, flows)
    finally:
        await db.dispose()


@staff_app.command("add")
def staff_add(
    telegram: Annotated[
        int | None, typer.Option("--telegram", help="The person's Telegram user id (a number).")
    ] = None,
    web_login: Annotated[
        str | None, typer.Option("--web-login", help="A login for the dashboard; asks for the password.")
    ] = None,
    role: Annotated[
        str, typer.Option(help="manager (/report, /survey, dashboard) or agent (/survey only).")
    ] = "manager",
    name: Annotated[
        str | None,
        typer.Option(help="Name stored as the agent of surveys they create (default: Telegram name)."),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the dashboard password from standard input.")
    ] = False,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            help="Language of their /report and dashboard: de or en "
            "(default: their Telegram app's or browser's, else STAFF_LANGUAGE).",
        ),
    ] = None,
) -> None:
    """Give a Telegram user a staff role, or create a dashboard login (or change either).

    Telegram user ids are numbers; a user sees theirs by sending /start to @userinfobot.
    A dashboard password has at least 10 characters and is stored as an argon2 hash.
    Without --lang an existing member keeps the language they had.

    Example: afterword staff add --telegram 123456789 --role manager --name Anna --lang de
    Example: afterword staff add --web-login anna --role manager
    """
    import sys

    from bot.settings import STAFF_ROLES
    from bot.staff import add_staff, set_web_login_language
    from bot.staff_language import STAFF_LANGUAGES
    from bot.web.auth import set_web_login

    if role not in STAFF_ROLES:
        fail(f"--role: {role!r} is not one of {', '.join(STAFF_ROLES)}", 2)
    if lang is not None and lang not in STAFF_LANGUAGES:
        fail(f"--lang: {lang!r} is not one of {', '.join(STAFF_LANGUAGES)}", 2)
    if (telegram is None) == (web_login is None):
        fail("give --telegram ID or --web-login NAME (one of them)", 2)
    if password_stdin and web_login is None:
        fail("--password-stdin: only a dashboard login has a password; use it with --web-login", 2)
    password = ""
    if web_login is not None:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = load()

    async def _add(service: Service) -> bool:
        if web_login is not None:
            created = await set_web_login(
                service.db, login=web_login, password=password, role=role, name=name, now=service.clock()
            )
            if lang is not None:
                await set_web_login_language(service.db, web_login, lang)
            return created
        assert telegram is not None  # noqa: S101 - checked above
        return await add_staff(
            service.db, telegram_id=telegram, role=role, name=name, now=service.clock(), language=lang
        )

    created = with_service(settings, _add)
    who = f"dashboard login {web_login}" if web_login is not None else f"Telegram user {telegram}"
    speaks = f", language {lang}" if lang is not None else ""
    typer.echo(f"{'added' if created else 'updated'}: {who} is {role}{speaks}")


@staff_app.command("remove")
def staff_remove(
    telegram: Annotated[int, typer.Option("--telegram", help="The Telegram user id to remove.")],
) -> None:
    """Take the staff role from a Telegram user added with `staff add`.

    Example: afterword staff remove --telegram 123456789
    """
    from bot.staff import remove_staff

    settings = load()

    def _remove(service: Service) -> Awaitable[Any]:
        return remove_staff(service.db, telegram, now=service.clock())

    if not with_service(settings, _remove):
        hint = " (it is in TELEGRAM_STAFF: remove it there)" if telegram in settings.telegram_staff else ""
        fail(f"--telegram: no staff member {telegram} was added with `staff add`{hint}")
    typer.echo(f"removed: Telegram user {telegram}")


@staff_app.command("list")
def staff_list() -> None:
    """List the staff: added with `staff add` and from TELEGRAM_STAFF.

    Example: afterword staff list
    """
    from rich.console import Console
    from rich.table import Table

    from bot.staff import list_staff

    settings = load()

    def _list(service: Service) -> Awaitable[Any]:
        return list_staff(service.db, settings)

    members = with_service(settings, _list)
    table = Table("telegram user", "web login", "role", "name", "language", "from")
    for member in members:
        telegram = str(member.telegram_id) if member.telegram_id is not None else ""
        table.add_row(
            telegram,
            member.web_login or "",
            member.role,
            member.name or "",
            member.language or "",
            member.source,
        )
    Console(highlight=False).print(table)


@telegram_app.command("set-webhook")
def telegram_set_webhook() -> None:
    """Tell Telegram to post updates to PUBLIC_BASE_URL/telegram/webhook, with the secret.

    Needs TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET and PUBLIC_BASE_URL (https).

    Example: afterword telegram set-webhook
    """
    from bot.errors import ConfigError

    settings = load()
    if not settings.telegram_enabled:
        fail(str(ConfigError("TELEGRAM_BOT_TOKEN", "not set; the Telegram channel is off")), 2)

    async def _set() -> str:
        from bot.channels.telegram.bot import TelegramBot

        service = await open_service(settings)
        try:
            bot = TelegramBot(service)
            await bot.check()
            try:
                return await bot.set_webhook()
            finally:
                await bot.application.shutdown()
        finally:
            await service.close()

    url = run(_set())
    typer.echo(f"webhook set: {url} (updates: message, callback_query)")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="A name for who uses the key, e.g. zendesk-prod.")],
) -> None:
    """Create an API key and print it once; only its hash is stored.

    Example: afterword apikey create zendesk-prod
    """
    from bot.apikeys import create_key

    settings = load()

    def _create(service: Service) -> Awaitable[Any]:
        return create_key(service.db, name, now=service.clock())

    key = with_service(settings, _create)
    typer.echo(key)
    err.print(
        f"API key {name!r} created. Store it now: it is not shown again. Use: Authorization: Bearer <key>"
    )


@apikey_app.command("list")
def apikey_list() -> None:
    """List API keys: name, created, last used, revoked (never the keys).

    Example: afterword apikey list
    """
    from rich.console import Console
    from rich.table import Table

    from bot.apikeys import list_keys

    settings = load()

    def _list(service: Service) -> Awaitable[Any]:
        return list_keys(service.db)

    table = Table("name", "created", "last used", "revoked")
    for key in with_service(settings, _list):
        table.add_row(
            key.name,
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "",
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    Console(highlight=False).print(table)


@apikey_app.command("revoke")
def apikey_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke an API key: requests with it get 401 from now on.

    Example: afterword apikey revoke zendesk-prod
    """
    from bot.apikeys import revoke_key

    settings = load()

    def _revoke(service: Service) -> Awaitable[Any]:
        return revoke_key(service.db, name, now=service.clock())

    if not with_service(settings, _revoke):
        fail(f"NAME: no active API key named {name!r} (see `afterword apikey list`)")
    typer.echo(f"revoked: {name}")
