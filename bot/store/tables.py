"""The database schema as SQLAlchemy Core tables; Alembic migrations create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from bot.lifecycle import JobKind, JobStatus, SurveyStatus, one_of

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them without a zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Afterword stores aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


MAX_REASON = 500  # surveys.closed_reason
REPORT_COLUMNS = ("metric", "scale_min", "scale_max", "scale_best", "score", "answered_at")
# The headline answers only (CSAT, NPS and CES count one per respondent): partial indexes,
# whose condition the report's statements repeat word for word, as SQLite needs to use them.
# Not headline as a leading column: after ANALYZE, SQLite skip-scanned such an index to use
# the date range and sorted for the GROUP BY, 1.5 s instead of 0.2 s at a million answers.
# headline is still the last column: SQLite reads a column of the condition from the table
# unless the index holds it, which made each histogram read every row (0.5 s).
HEADLINE_ONLY: dict[str, Any] = {
    "sqlite_where": sa.text("headline = 1"),
    "postgresql_where": sa.text("headline"),
}


def _now() -> datetime:
    return datetime.now(UTC)


contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("address", sa.String(255), nullable=False),
    sa.Column("language", sa.String(8)),
    sa.Column("time_zone", sa.String(64)),
    sa.Column("opted_out_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
    sa.UniqueConstraint("channel", "address"),
    # The throttle looks an address up on every channel; the unique index leads with the channel.
    sa.Index(None, "address"),
)

# People erased on request (bot.privacy.erase): no address, only a SHA-256 of channel and
# address, so that a later trigger for the same number or chat id is refused as opted out
# (bot.surveys._contact) until the person opts in again (bot.contacts.opted_in).
erased_contacts = sa.Table(
    "erased_contacts",
    metadata,
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("address_hash", sa.String(64), nullable=False),
    sa.Column("erased_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("channel", "address_hash"),
)

surveys = sa.Table(
    "surveys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("flow_id", sa.String(64), nullable=False),
    sa.Column("flow_version", sa.Integer, nullable=False),
    sa.Column("ticket", sa.String(128)),
    sa.Column("agent", sa.String(128)),
    sa.Column("team", sa.String(128)),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("language", sa.String(8), nullable=False),
    # A SurveyStatus; it moves only as bot.lifecycle.SURVEY_TRANSITIONS allows (a trigger, migration 0011).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("send_at", UTCDateTime()),
    sa.Column("sent_at", UTCDateTime()),
    sa.Column("completed_at", UTCDateTime()),
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("meta", sa.JSON),
    # The language the trigger asked for; None lets the customer's own language decide when
    # a link survey is opened (Telegram's language_code), else the flow's default stays.
    sa.Column("requested_language", sa.String(8)),
    # The channel's handle of the question last shown (a Telegram message id), so that
    # its buttons can be removed once it is answered.
    sa.Column("channel_ref", sa.String(64)),
    # Why it closed, when something other than the customer closed it: a provider's refusal of
    # its send ("telegram: Forbidden: bot was blocked by the user (code 403)"), a flow version
    # that cannot be served. At most MAX_REASON characters (migration 0012).
    sa.Column("closed_reason", sa.String(MAX_REASON)),
    sa.UniqueConstraint("ticket", "flow_id"),
    sa.Index(None, "contact_id", "status"),
    sa.Index(None, "status", "expires_at"),
    sa.Index(None, "sent_at"),
    # On PostgreSQL; SQLite has triggers of the same name instead (bot.lifecycle.value_triggers).
    sa.CheckConstraint(one_of("status", SurveyStatus), name="status"),
)

answers = sa.Table(
    "answers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # Imported answers have no survey; they carry the response id of the tool they came from.
    sa.Column("survey_id", sa.Integer, sa.ForeignKey("surveys.id", ondelete="CASCADE")),
    # One respondent of an import: unique with the question (a response has several answers).
    sa.Column("response_id", sa.String(128)),
    sa.Column("question_id", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(8)),
    sa.Column("score", sa.Integer),
    # The question's scale, so CSAT knows which end is best for every answer.
    sa.Column("scale_min", sa.Integer),
    sa.Column("scale_max", sa.Integer),
    sa.Column("scale_best", sa.String(4)),
    sa.Column("text", sa.Text),
    sa.Column("answered_at", UTCDateTime(), nullable=False),
    # Copied from the survey so that every report reads one table.
    sa.Column("ticket", sa.String(128)),
    sa.Column("agent", sa.String(128)),
    sa.Column("team", sa.String(128)),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("flow_id", sa.String(64), nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    # The answer to its flow's headline question of its metric (Flow.headline_question), or
    # an import's first row per response and metric: the flow's CSAT, NPS and CES count only
    # these, so one respondent is one observation (migration 0008).
    sa.Column("headline", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("survey_id", "question_id"),
    sa.UniqueConstraint("response_id", "question_id"),
    sa.Index(None, "metric", "answered_at"),
    sa.Index(None, "answered_at"),
    # Covering indexes in GROUP BY order: the report's histograms come from an index scan
    # without a sort (on SQLite 0.13 s instead of 2.4 s for a million answers).
    *(
        sa.Index(f"ix_answers_report{suffix}", *lead, *REPORT_COLUMNS, "headline", **HEADLINE_ONLY)
        for suffix, lead in (
            ("", ()),
            ("_agent", ("agent",)),
            ("_team", ("team",)),
            ("_channel", ("channel",)),
        )
    ),
    # Every answer of each question, for the per-question scores beside the headline ones.
    sa.Index("ix_answers_report_question", "question_id", *REPORT_COLUMNS),
    # Only answers with a comment: "latest comments" reads a few rows, not the table.
    sa.Index(
        "ix_answers_comments",
        "answered_at",
        sqlite_where=sa.text("text IS NOT NULL"),
        postgresql_where=sa.text("text IS NOT NULL"),
    ),
)

inbound_events = sa.Table(
    "inbound_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("provider", "event_id"),
)

# Durable work for later: alerts now, sends, reminders and expiry with the scheduler.
# Queued in the same transaction as the answer that caused it, so nothing is lost.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("survey_id", sa.Integer, sa.ForeignKey("surveys.id", ondelete="CASCADE")),
    sa.Column("payload", sa.JSON),
    # A JobStatus, moving as bot.lifecycle.JOB_TRANSITIONS allows; kind is a JobKind.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", UTCDateTime()),
    sa.Column("last_error", sa.Text),
    sa.Column("result", sa.JSON),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("done_at", UTCDateTime()),
    sa.Index(None, "status", "due_at"),
    sa.Index(None, "survey_id", "kind"),
    sa.CheckConstraint(one_of("kind", JobKind), name="kind"),
    sa.CheckConstraint(one_of("status", JobStatus), name="status"),
)

# The next free send slot per provider (epoch seconds), shared by every worker process, so
# SEND_RATE_* holds across all of them (bot.scheduler.reserve_slot).
send_rates = sa.Table(
    "send_rates",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("next_at", sa.Double, nullable=False),
)

# Every flow definition served, keyed by (flow_id, version): a survey is answered with the
# definition of the version it started with (surveys.flow_version), even after the file
# changed. digest: SHA-256 of the definition's canonical JSON (bot.service.flow_digest).
flow_versions = sa.Table(
    "flow_versions",
    metadata,
    sa.Column("flow_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("first_seen_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("flow_id", "version"),
)

staff = sa.Table(
    "staff",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(128)),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("telegram_id", sa.BigInteger, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Dashboard sign-in (bot.web.auth): a login name and an argon2id hash, never the password.
    sa.Column("web_login", sa.String(64)),
    sa.Column("password_hash", sa.String(255)),
    # The language of their staff texts (de or en); NULL: Telegram's or the browser's, then STAFF_LANGUAGE.
    sa.Column("language", sa.String(8)),
    sa.UniqueConstraint("web_login"),
)

# API keys: only a SHA-256 of each key is kept; the key itself is shown once, at creation.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime()),
    sa.Column("revoked_at", UTCDateTime()),
)

# Dashboard sessions: the cookie holds 256 random bits; only their SHA-256 is kept here, so a
# copy of the database does not let anyone sign in.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("staff_id", sa.Integer, sa.ForeignKey("staff.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", UTCDateTime()),
    sa.Index(None, "expires_at"),
)

# Failed dashboard sign-ins of the last minutes, counted per login and per address to slow guessing.
login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("login", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("failed_at", UTCDateTime(), nullable=False),
    sa.Index(None, "login", "failed_at"),
    sa.Index(None, "ip", "failed_at"),
)

# Staff actions that read or change personal data (bot.audit): who, when, what, from where.
# Never customer content: subject names a record ("staff:anna", "apikey:3", "survey:12").
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(128)),
    sa.Column("source", sa.String(128)),
    sa.Index(None, "at"),
)

# The answers' indexes that only reads use (unique ones back constraints): a large SQLite
# import drops them and builds each once at the end, instead of updating them a million times
# (bot.importer).
READ_INDEXES = tuple(index for index in answers.indexes if not index.unique)
