"""A person's data from the command line: `afterword erase`, `export-person`, `housekeeping`.

Registered on the app by bot/cli/main.py. Like every command, each imports the database and
the domain only when it runs, so `afterword --help` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.support import err, fail, load, with_service

if TYPE_CHECKING:
    from bot.privacy import Person
    from bot.service import Service

_SELECTORS = "--phone, --telegram, --email or --ticket"
Phone = Annotated[
    str | None,
    typer.Option(
        "--phone", help="A phone number (E.164, or national in PHONE_REGION): SMS, WhatsApp, voice."
    ),
]
Telegram = Annotated[str | None, typer.Option("--telegram", help="A Telegram chat id.")]
Email = Annotated[str | None, typer.Option("--email", help="An e-mail address (contacts of channel email).")]
Ticket = Annotated[
    str | None, typer.Option("--ticket", help="A ticket id: the people its surveys were sent to.")
]


def _person(phone: str | None, telegram: str | None, email: str | None, ticket: str | None) -> Person:
    """The one person the options name; exit 2 naming the options unless exactly one is given."""
    from bot.errors import AfterwordError, InputError
    from bot.privacy import Person

    given = [
        (kind, value)
        for kind, value in zip(
            ("phone", "telegram", "email", "ticket"), (phone, telegram, email, ticket), strict=True
        )
        if value is not None
    ]
    if len(given) != 1:
        fail(f"give exactly one of {_SELECTORS}", 2)
    kind, value = given[0]
    try:
        return Person.parse(kind, value, region=load().phone_region if kind == "phone" else "DE")
    except InputError as exc:
        fail(f"--{kind}: {exc.message}", 2)
    except AfterwordError as exc:  # InvalidPhone
        fail(f"--{kind}: {exc}", exc.exit_code)


def _print_counts(counts: dict[str, int], verb: str) -> None:
    width = max(len(name) for name in counts)
    typer.echo(verb)
    for name, count in counts.items():
        typer.echo(f"  {name:<{width}}  {count}")


def erase(
    phone: Phone = None,
    telegram: Telegram = None,
    email: Email = None,
    ticket: Ticket = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be removed; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; erase at once.")] = False,
) -> None:
    """Erase a person's data: address, comments, survey metadata, provider references.

    Scores stay, without the person, so reports do not change; open surveys close; the
    person is not surveyed again unless they opt in. Prints the rows changed per table and is
    safe to run again (then it prints zeros). Without --yes it shows the counts and asks first.
    Recorded in the audit trail by a hash of the address, never the address.

    Example: afterword erase --phone +4915112345678 --dry-run
    """
    from bot import audit
    from bot.privacy import erase_request

    person = _person(phone, telegram, email, ticket)
    settings = load()
    actor = audit.cli_actor()

    def _run(dry: bool) -> dict[str, int] | None:
        async def go(service: Service) -> dict[str, int] | None:
            return await service.db.transact(
                erase_request, person, now=service.clock(), dry_run=dry, actor=actor, source=audit.CLI
            )

        return with_service(settings, go)

    if not (yes or dry_run):
        planned = _run(True)
        if planned is None:
            err.print("nothing is stored about that person", markup=False)
            return
        _print_counts(planned, "would change:")
        if not typer.confirm("Erase these?", default=False):
            fail("not erased", 1)
    counts = _run(dry_run)
    if counts is None:
        err.print("nothing is stored about that person", markup=False)
        return
    _print_counts(counts, "would change:" if dry_run else "changed:")


def export_person(
    phone: Phone = None,
    telegram: Telegram = None,
    email: Email = None,
    ticket: Ticket = None,
) -> None:
    """Print everything stored about a person as JSON (an access request, GDPR Art. 15).

    Contacts and consent, surveys with their answers and comments, the jobs queued for them,
    and erasures. Exit 1 when nothing is stored. Recorded in the audit trail.

    Example: afterword export-person --ticket T-1 > person.json
    """
    import json

    from bot import audit
    from bot.privacy import export_request

    person = _person(phone, telegram, email, ticket)
    settings = load()
    actor = audit.cli_actor()

    async def go(service: Service) -> dict[str, Any] | None:
        return await service.db.transact(
            export_request, person, now=service.clock(), actor=actor, source=audit.CLI
        )

    found = with_service(settings, go)
    if found is None:
        fail(f"nothing is stored about that person (--{person.kind})", 1)
    typer.echo(json.dumps(found, indent=2, ensure_ascii=False))


def housekeeping(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be removed; change nothing.")
    ] = False,
) -> None:
    """Apply RETENTION_DAYS_PII and RETENTION_DAYS_EVENTS now, and drop stale dashboard logins.

    The scheduler does the same once a day in `serve` and `worker`; this runs it at once (in
    batches of 1,000 rows) and prints how many rows of each kind it removed or anonymised.

    Example: afterword housekeeping --dry-run
    """
    from bot.housekeeping import housekeeping as run_housekeeping

    settings = load()

    async def go(service: Service) -> dict[str, int]:
        return await run_housekeeping(service, dry_run=dry_run)

    _print_counts(with_service(settings, go), "would change:" if dry_run else "changed:")
