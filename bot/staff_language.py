"""Which language a staff text is in: the person's own, else what their client says, else STAFF_LANGUAGE.

Staff texts ship in German and English (bot.texts). Each place that shows them has its own
signal for a person who chose none: Telegram's ``language_code``, the browser's
``Accept-Language``, the terminal's ``LC_ALL``/``LC_MESSAGES``/``LANG``. The alert chat is
read by the whole team and has none, so it takes STAFF_LANGUAGE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

StaffLanguage = Literal["de", "en"]
STAFF_LANGUAGES: tuple[StaffLanguage, ...] = ("de", "en")
# The POSIX locales that name no language: a terminal in one follows STAFF_LANGUAGE.
_NEUTRAL_LOCALES = ("C", "POSIX")


def shipped(code: str | None) -> StaffLanguage | None:
    """The staff language a language tag or locale names ('de-AT', 'de_DE.UTF-8', 'EN'), else None."""
    if not code:
        return None
    primary = code.strip().replace("_", "-").split("-", 1)[0].split(".", 1)[0].lower()
    for language in STAFF_LANGUAGES:
        if primary == language:
            return language
    return None


def staff_language(*signals: str | None, default: StaffLanguage) -> StaffLanguage:
    """The first of ``signals`` (most personal first) that names de or en, else ``default``."""
    for signal in signals:
        if (found := shipped(signal)) is not None:
            return found
    return default


def accepted(header: str | None) -> StaffLanguage | None:
    """The staff language a browser prefers most by its Accept-Language (RFC 9110 §12.5.4), or None.

    Ranges are taken by their q-value, highest first and in the header's order among equals;
    q=0 means "not this one"; ``*`` and a malformed q-value name no language.
    """
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((header or "").split(",")):
        tag, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and 0 < quality <= 1:
            ranked.append((-quality, position, tag))
    for _, _, tag in sorted(ranked):
        if (found := shipped(tag)) is not None:
            return found
    return None


def from_locale(environ: Mapping[str, str]) -> StaffLanguage | None:
    """The staff language of a terminal's locale: LC_ALL, else LC_MESSAGES, else LANG (POSIX's order).

    The first of them that is set decides, as it does for the C library: C, POSIX and their
    .UTF-8 forms name no language, nor does a locale in another language (fr_FR.UTF-8).
    """
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "").strip()
        if value:
            if value.split(".", 1)[0] in _NEUTRAL_LOCALES:
                return None
            return shipped(value)
    return None
