"""The one settings object: the environment, then `.env`, then the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import ConfigError

# Plain driver names map to the async drivers Afterword uses, so a URL copied from
# elsewhere ("postgres://…", "sqlite:///…") just works.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_URL_HELP = (
    "use sqlite+aiosqlite:///path/to/afterword.db or postgresql+asyncpg://user:password@host:5432/dbname"
)


def database_url(raw: str) -> URL:
    """``raw`` as a SQLAlchemy URL with an async driver; ConfigError naming the key if it is not one."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError("DATABASE_URL", f"cannot read {raw!r}; {_URL_HELP}") from exc
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ConfigError("DATABASE_URL", f"unsupported database {url.drivername!r}; {_URL_HELP}")
    if driver.startswith("postgresql") and not url.database:
        raise ConfigError("DATABASE_URL", f"no database name in {raw!r}; {_URL_HELP}")
    return url.set(drivername=driver)


class Settings(BaseSettings):
    """Every setting Afterword reads. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///afterword.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    flows_dir: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    survey_ttl_hours: float = Field(default=48, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Targets: seed 004 (../shared/seeds/004_…): NPS not below 50, CSAT near 80 %.
    target_csat: float = Field(default=80.0, ge=0, le=100)
    target_nps: float = Field(default=50.0, ge=-100, le=100)
    target_ces: float | None = None

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        return database_url(value).render_as_string(hide_password=False)

    @field_validator("flows_dir", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part) for part in value.split(":") if part.strip()]
        return value

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
