"""The one settings object: the environment, then `.env`, then the defaults."""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.quiet_hours import QuietHours

# Plain driver names map to the async drivers Afterword uses, so a URL copied from
# elsewhere ("postgres://…", "sqlite:///…") just works.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
StaffRole = Literal["manager", "agent"]
STAFF_ROLES: tuple[StaffRole, ...] = ("manager", "agent")
# The shortest retention allowed, in days (0 keeps for ever): the PII limit keeps the default
# 30-day report's comments; the events limit outlasts Telegram's 24 hours of redelivery.
RETENTION_MINIMUM_DAYS = {"retention_days_pii": 30, "retention_days_events": 2}
# Telegram allows these characters in a webhook's secret token, 1 to 256 of them.
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# user:password@ after the scheme, in a URL that make_url cannot read.
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:).*@", re.DOTALL)
_URL_HELP = (
    "use sqlite+aiosqlite:///path/to/afterword.db or postgresql+asyncpg://user:password@host:5432/dbname"
)


def shown_url(raw: str) -> str:
    """A database URL as it may be shown (a repr, an error, a log): its password as ***."""
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unreadable: everything up to its last @ may be the password
        return _PASSWORD_IN_URL.sub(r"\g<1>***@", raw)


def database_url(raw: str) -> URL:
    """``raw`` as a SQLAlchemy URL with an async driver; ConfigError naming the key if it is not one.

    The messages show the URL without its password.
    """
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # from None: the parser's own message quotes pieces of the URL, its password among them.
        raise ConfigError("DATABASE_URL", f"cannot read {shown_url(raw)!r}; {_URL_HELP}") from None
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError("DATABASE_URL", f"unsupported database {url.drivername!r}; {_URL_HELP}")
    if driver.startswith("postgresql") and not url.database:
        raise ConfigError("DATABASE_URL", f"no database name in {shown_url(raw)!r}; {_URL_HELP}")
    return url.set(drivername=driver)


class Settings(BaseSettings):
    """Every setting Afterword reads. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() show DATABASE_URL without its password; the secrets are SecretStr.
        for name, value in super().__repr_args__():
            yield name, shown_url(value) if name == "database_url" and isinstance(value, str) else value

    database_url: str = "sqlite+aiosqlite:///afterword.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    flows_dir: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Every number is finite and within a range that makes sense: inf, nan or 1e12 validated
    # before and broke at run time (a trigger 500, a report 500, sends repeated or never made).
    survey_ttl_hours: float = Field(default=48, gt=0, le=24 * 365, allow_inf_nan=False)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Targets: seed 004 (../shared/seeds/004_…): NPS not below 50, CSAT near 80 %.
    target_csat: float = Field(default=80.0, ge=0, le=100, allow_inf_nan=False)
    target_nps: float = Field(default=50.0, ge=-100, le=100, allow_inf_nan=False)
    target_ces: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    default_flow: str = "support-csat"
    # The staff texts' language where nobody's own is known: the alert chat, and the fallback after
    # a staff member's own (`staff add --lang`), Telegram's language_code, Accept-Language or LANG.
    staff_language: Literal["de", "en"] = "en"
    public_base_url: str | None = None
    telegram_bot_token: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_api_base_url: str | None = None
    telegram_staff: Annotated[dict[int, StaffRole], NoDecode] = Field(default_factory=dict)
    telegram_alert_chat_id: int | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_whatsapp_from: str | None = None
    twilio_api_base_url: str | None = None
    phone_region: str = Field(default="DE", pattern=r"^[A-Z]{2}$")
    # Sending rules (the scheduler): quiet hours in the recipient's zone, throttle, reminder.
    quiet_hours: str = "21:00-08:00"
    default_time_zone: str = "Europe/Berlin"
    throttle_days: int = Field(default=30, ge=0, le=3650)
    reminder_after_hours: float = Field(default=24, ge=0, le=24 * 365, allow_inf_nan=False)
    send_rate_telegram: float = Field(
        default=30, gt=0, le=1000, allow_inf_nan=False
    )  # messages per second, Telegram's limit
    send_rate_telegram_chat: float = Field(
        default=1, gt=0, le=1000, allow_inf_nan=False
    )  # new messages per second to one chat, in this process (Telegram asks for about one)
    send_rate_sms: float = Field(
        default=1, gt=0, le=1000, allow_inf_nan=False
    )  # messages per second per sender (a long code: 1)
    send_rate_voice: float = Field(
        default=1, gt=0, le=1000, allow_inf_nan=False
    )  # calls per second (Twilio's default CPS: 1)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)
    # The web server's edge: reverse proxies whose X-Forwarded-For is believed (addresses or
    # networks, comma-separated; none by default), open connections at most (more get 503), and
    # seconds a client may take to send a request's headers, or between two parts of its body.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    client_timeout_seconds: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
    # Helpdesk webhooks (/hooks/zendesk, /hooks/freshdesk, /hooks/generic).
    hooks_secret: SecretStr | None = None
    hooks_channel: Literal["sms", "whatsapp", "voice"] = "sms"
    hooks_generic_map: str | None = None
    # Triggers: open (pending or active) surveys one contact (channel and number or chat id) may
    # have at once. A customer whose tickets were closed the same day gets a few, a looping
    # script not thousands; each one sent closes the contact's older ones anyway.
    max_open_surveys_per_address: int = Field(default=3, ge=1, le=1000)
    # Retention, applied once a day in small batches (bot.housekeeping); 0 keeps for ever.
    # PII: comments, contact addresses and survey metadata older than this are anonymised, scores
    # stay. A year keeps every comment a quarterly or yearly review reads; at least 30 days, the
    # default report's period. EVENTS: provider de-duplication records and finished jobs. They
    # must outlast every redelivery: Telegram keeps an undelivered update for 24 hours, Twilio
    # retries a webhook within seconds (connection overrides) or once on the fallback URL.
    retention_days_pii: int = 365
    retention_days_events: int = 30

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        return database_url(value).render_as_string(hide_password=False)

    @field_validator("retention_days_pii", "retention_days_events")
    @classmethod
    def _retention(cls, value: int, info: ValidationInfo) -> int:
        least = RETENTION_MINIMUM_DAYS[str(info.field_name)]
        if value != 0 and not least <= value <= 3650:
            raise ValueError(f"{value} days: use 0 (keep for ever) or {least} to 3650 days")
        return value

    @field_validator("staff_language", mode="before")
    @classmethod
    def _language_code(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("flows_dir", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        networks: list[IPv4Network | IPv6Network] = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                networks.append(ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network; use e.g. 127.0.0.1,10.0.0.0/8"
                ) from None
        return tuple(networks)

    @field_validator("public_base_url", "telegram_api_base_url", "twilio_api_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL such as https://survey.example.com")
        return value

    @field_validator(
        "telegram_bot_token",
        "telegram_webhook_secret",
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_from_number",
        "twilio_messaging_service_sid",
        "twilio_whatsapp_from",
        "hooks_secret",
        "hooks_generic_map",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET_TOKEN.match(value.get_secret_value()):
            raise ValueError("use 1 to 256 characters A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("telegram_staff", mode="before")
    @classmethod
    def _staff_list(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        staff: dict[int, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            user, _, role = item.partition(":")
            if not user.strip().lstrip("-").isdigit() or role.strip() not in STAFF_ROLES:
                raise ValueError(
                    f"{item!r} is not <telegram user id>:<role> with role manager or agent, "
                    "e.g. 123456789:manager,987654321:agent"
                )
            staff[int(user)] = role.strip()
        return staff

    @field_validator("twilio_account_sid")
    @classmethod
    def _account_sid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"AC[0-9a-fA-F]{32}", value.strip()):
            raise ValueError("an account SID is AC followed by 32 hex digits (Twilio console, Account Info)")
        return value.strip() if value else value

    @field_validator("twilio_from_number", "twilio_whatsapp_from")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"\+[1-9]\d{6,14}", value.strip().removeprefix("whatsapp:")
        ):
            raise ValueError(f"{value!r} is not a number in E.164 form such as +4930123456789")
        return value.strip().removeprefix("whatsapp:") if value else value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        from bot.quiet_hours import parse_quiet_hours

        parse_quiet_hours(value)  # ValueError with the reason
        return value

    @field_validator("default_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from bot.quiet_hours import zone_or_default

        if zone_or_default(value, "") != value:
            raise ValueError(f"{value!r} is not a time zone name such as Europe/Berlin")
        return value

    @field_validator("hooks_generic_map")
    @classmethod
    def _generic_map(cls, value: str | None) -> str | None:
        if value is not None:
            from bot.web.hooks import parse_mapping

            parse_mapping(value)
        return value

    @property
    def quiet(self) -> QuietHours | None:
        """The parsed QUIET_HOURS, None when off."""
        from bot.quiet_hours import parse_quiet_hours

        return parse_quiet_hours(self.quiet_hours)

    @property
    def twilio_enabled(self) -> bool:
        """Whether the Twilio channels run: only with an account SID and auth token."""
        return self.twilio_account_sid is not None and self.twilio_auth_token is not None

    @property
    def telegram_enabled(self) -> bool:
        """Whether the Telegram channel runs: only with a bot token."""
        return self.telegram_bot_token is not None

    @property
    def targets(self) -> dict[str, float]:
        """The score targets by metric; CES has one only when set."""
        found = {"csat": self.target_csat, "nps": self.target_nps}
        if self.target_ces is not None:
            found["ces"] = self.target_ces
        return found

    @property
    def database(self) -> URL:
        """The database URL, parsed."""
        return database_url(self.database_url)


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value raises ConfigError naming its key.

    A malformed DATABASE_URL raises ConfigError from inside the validator: pydantic lets
    exceptions that are not ValueError through unchanged.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(key, first["msg"].removeprefix("Value error, ")) from exc
