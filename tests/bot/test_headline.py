"""One respondent is one observation: the headline answer of each metric, on every path that stores answers.

Paths: a conversation (`afterword chat`, the engine through `inbound.handle`), an import
(`import_csv`, one headline per response id and metric), and the upgrade of a database
that holds answers from before (migration 0008). Both backends.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from bot.importer import import_csv
from bot.service import Service
from bot.store.db import Database
from bot.store.tables import answers
from tests.cli import invoke, query

HEADLINES = sa.select(answers.c.question_id, answers.c.score, answers.c.headline).order_by(answers.c.id)


def test_five_stars_are_the_best_grade_in_chat(cli_env: dict[str, str], in_tmp_path: None) -> None:
    """`printf '⭐⭐⭐⭐⭐\\nstop\\n' | afterword chat --lang de` stores 1 ("Sehr zufrieden"), the headline."""
    ran = invoke(["chat", "--lang", "de", "--ticket", "T-stars"], cli_env, stdin="⭐⭐⭐⭐⭐\nstop\n")
    assert 0 == ran.code, ran.stderr
    rows = asyncio.run(query(cli_env["DATABASE_URL"], HEADLINES))
    assert [("satisfaction", 1, True)] == rows


def test_one_chat_survey_has_one_headline_csat(cli_env: dict[str, str], in_tmp_path: None) -> None:
    """support-csat answered 2, 5, 2 and a comment: satisfaction is the headline, the rest are not."""
    ran = invoke(["chat", "--lang", "en", "--ticket", "T-one"], cli_env, stdin="2\n5\n2\nslow\n")
    assert 0 == ran.code, ran.stderr
    rows = asyncio.run(query(cli_env["DATABASE_URL"], HEADLINES))
    assert [
        ("satisfaction", 2, True),
        ("resolution", 5, False),
        ("speed", 2, False),
        ("comment", None, False),
    ] == rows
    report = invoke(["report", "--format", "json"], cli_env)
    assert 0 == report.code, report.stderr
    data = json.loads(report.stdout)
    assert (100.0, 1, None) == (data["csat"]["value"], data["csat"]["n"], data["csat"]["ci95_low"])
    assert {"satisfaction": 1, "resolution": 1, "speed": 1} == {
        q["question"]: q["csat"]["n"] for q in data["questions"]
    }


async def test_import_marks_one_headline_per_response_and_metric(service: Service, tmp_path: Path) -> None:
    """Rows sharing a response id are one respondent: its first row of each metric is the headline.

    A second file that adds a question to a response already there adds no second headline,
    and importing the same file again adds nothing.
    """
    first = tmp_path / "first.csv"
    first.write_text(
        "response_id,submitted_at,metric,question,score\n"
        "r1,2026-11-20T10:00:00Z,csat,overall,5\n"
        "r1,2026-11-20T10:00:00Z,csat,speed,1\n"
        "r1,2026-11-20T10:00:00Z,nps,,9\n"
        "r2,2026-11-20T11:00:00Z,csat,overall,4\n",
        encoding="utf-8",
    )
    second = tmp_path / "second.csv"
    second.write_text(
        "response_id,submitted_at,metric,question,score\n"
        "r1,2026-11-20T10:00:00Z,csat,friendliness,5\n"
        "r3,2026-11-20T12:00:00Z,csat,speed,2\n",
        encoding="utf-8",
    )
    assert 4 == (await import_csv(service.db, first)).added
    assert 2 == (await import_csv(service.db, second)).added
    again = await import_csv(service.db, first)
    assert (0, 4) == (again.added, again.already_there)
    async with service.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(answers.c.response_id, answers.c.question_id, answers.c.headline).order_by(
                    answers.c.id
                )
            )
        ).all()
    assert [
        ("r1", "overall", True),
        ("r1", "speed", False),
        ("r1", "nps", True),
        ("r2", "overall", True),
        ("r1", "friendliness", False),
        ("r3", "speed", True),
    ] == [tuple(r) for r in rows]


async def test_upgrade_marks_the_first_answer_of_each_survey_and_metric(empty_db_url: str) -> None:
    """A database with answers from before 0008 gets one headline per survey (or response) and metric."""
    db = Database(make_url(empty_db_url))
    try:
        await db.upgrade("0007")

        def before_0008(conn: Connection) -> None:
            conn.execute(
                sa.text(
                    "INSERT INTO surveys (id, token, flow_id, flow_version, ticket, channel, language, status, created_at, state)"
                    " VALUES (1, 'tok', 'support-csat', 1, 'T1', 'web', 'de', 'completed', '2026-11-20 10:00:00', '{}')"
                )
            )
            for i, (survey, response, question, metric, score) in enumerate(
                [
                    (1, None, "satisfaction", "csat", 2),
                    (1, None, "resolution", "csat", 5),
                    (1, None, "speed", "csat", 1),
                    (1, None, "comment", None, None),
                    (None, "imp-1", "csat", "csat", 4),
                    (None, "imp-2", "nps", "nps", 10),
                ],
                1,
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO answers (id, survey_id, response_id, question_id, metric, score, answered_at,"
                        " channel, flow_id, language) VALUES (:id, :survey, :response, :question, :metric, :score,"
                        " '2026-11-20 10:00:00', 'web', 'support-csat', 'de')"
                    ),
                    {
                        "id": i,
                        "survey": survey,
                        "response": response,
                        "question": question,
                        "metric": metric,
                        "score": score,
                    },
                )

        await db.transact(before_0008)
        await db.upgrade()
        async with db.read() as conn:
            flags = (
                await conn.execute(
                    sa.select(answers.c.question_id, answers.c.headline).order_by(answers.c.id)
                )
            ).all()
    finally:
        await db.dispose()
    assert [
        ("satisfaction", True),
        ("resolution", False),
        ("speed", False),
        ("comment", False),
        ("csat", True),
        ("nps", True),
    ] == [tuple(f) for f in flags]
