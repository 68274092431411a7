"""The ceiling for answer throughput: a FastAPI route that reads the form and returns constant TwiML."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Danke!</Message></Response>'

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Up."""
    return {"status": "ok"}


@app.post("/twilio/sms")
async def sms(request: Request) -> Response:
    """Read the posted form, as a real webhook handler must, and answer the same TwiML every time."""
    await request.form()
    return Response(TWIML, media_type="application/xml")
