"""`afterword audit`: the audit trail of staff actions on personal data (bot.audit)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from bot.cli.support import fail, load, open_database, run

_SINCE = re.compile(r"^(\d{1,4})d$")


def audit(
    since: Annotated[
        str, typer.Option(help="Period ending now: a number of days such as 7d, 30d or 365d.")
    ] = "30d",
) -> None:
    """List the audit trail: logins, exports, erasures, API keys and staff roles, oldest first.

    Each row says when, who (a dashboard login, or the system user for the CLI), what, on which
    record, and from where (the client's address, "cli" or "telegram:<user id>"). It never holds
    a customer's number, name or comment.

    Example: afterword audit --since 7d
    """
    from datetime import UTC, datetime, timedelta

    from rich.console import Console
    from rich.table import Table

    from bot.audit import AuditEntry, listing

    match = _SINCE.match(since)
    if match is None or int(match.group(1)) == 0:
        fail(f"--since: {since!r} is not a number of days such as 7d, 30d or 365d", 2)
    start = datetime.now(UTC) - timedelta(days=int(match.group(1)))
    settings = load()

    async def _list() -> list[AuditEntry]:
        db = await open_database(settings)
        try:
            return await listing(db, start)
        finally:
            await db.dispose()

    entries = run(_list())
    table = Table("at (UTC)", "actor", "action", "subject", "source")
    for entry in entries:
        table.add_row(
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.actor,
            entry.action,
            entry.subject or "",
            entry.source or "",
        )
    Console(highlight=False).print(table)
