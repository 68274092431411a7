"""A person's data over the API: `GET` (export) and `DELETE` (erase) `/api/contacts/{address}`.

The same JSON as `afterword export-person` and `afterword erase`; an API key is needed, and
each request that finds someone is recorded in the audit trail as ``apikey:<key name>``
(by a hash of the address, never the address).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from bot.errors import AfterwordError, InputError
from bot.privacy import Person, erase_request, export_request
from bot.service import Service
from bot.web.api import api_key, error

router = APIRouter()
SOURCE = "api"  # the audit trail's source of these requests

Channel = Annotated[
    str | None,
    Query(
        description="sms, whatsapp or voice (a phone number: all three), telegram or email. "
        "Without it: an address with @ is an e-mail, one starting with + a phone number, a number a chat id."
    ),
]


def _person(request: Request, address: str, channel: str | None) -> Person | JSONResponse:
    service: Service = request.app.state.service
    try:
        return Person.of_address(address, channel, region=service.settings.phone_region)
    except InputError as exc:
        return error(422, "channel" if exc.field == "channel" else "address", exc.message)
    except AfterwordError as exc:  # InvalidPhone
        return error(422, "address", str(exc))


@router.get("/api/contacts/{address}", tags=["privacy"])
async def export_contact(
    request: Request, address: str, key: Annotated[str, Depends(api_key)], channel: Channel = None
) -> JSONResponse:
    """Everything stored about the person at ``address``, as `afterword export-person` prints it; 404 for nobody."""
    service: Service = request.app.state.service
    person = _person(request, address, channel)
    if isinstance(person, JSONResponse):
        return person
    found: dict[str, Any] | None = await service.db.transact(
        export_request, person, now=service.clock(), actor=f"apikey:{key}", source=SOURCE
    )
    if found is None:
        return error(404, "address", "nothing is stored about that address")
    return JSONResponse(found)


@router.delete("/api/contacts/{address}", tags=["privacy"])
async def erase_contact(
    request: Request,
    address: str,
    key: Annotated[str, Depends(api_key)],
    channel: Channel = None,
    dry_run: Annotated[bool, Query(description="Count what would change; change nothing.")] = False,
) -> JSONResponse:
    """Erase the person at ``address``: the rows changed per table, as `afterword erase`; 404 for nobody."""
    service: Service = request.app.state.service
    person = _person(request, address, channel)
    if isinstance(person, JSONResponse):
        return person
    counts = await service.db.transact(
        erase_request,
        person,
        now=service.clock(),
        dry_run=dry_run,
        actor=f"apikey:{key}",
        source=SOURCE,
    )
    if counts is None:
        return error(404, "address", "nothing is stored about that address")
    return JSONResponse({"dry_run": dry_run, "changed": counts})
