"""Quiet hours: keep survey sends out of the recipient's local night.

The `QUIET_HOURS` setting is a daily window of local wall-clock time such as ``21:00-08:00`` (which
wraps midnight) or ``off``. A send due inside the window is postponed to the first instant at which
the recipient's wall clock shows a time outside it. Afterword keeps instants as aware UTC datetimes;
recipients' zones are IANA names resolved with the standard library's `zoneinfo`.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, available_timezones

_FORM = "expected 'HH:MM-HH:MM' (24-hour, e.g. '21:00-08:00') or 'off'"
_OFF = frozenset({"off", "none"})
# [0-9], not \d: \d would also accept non-ASCII digits such as '٢١:٠٠'.
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})")
_DASH = re.compile("[-\u2013]")  # hyphen or en dash, which word processors substitute
# A window lasts under 24 wall-clock hours and DST stretches that by at most two real hours, so its
# end always comes within this span.
_HORIZON_HOURS = 48
_HOUR = 3600


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local time when no survey is sent: [start, end), wrapping midnight when start > end."""

    start: datetime.time
    end: datetime.time

    def contains(self, local: datetime.time) -> bool:
        """Whether the wall-clock time `local` is in the window (start inclusive, end exclusive)."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def parse_quiet_hours(text: str) -> QuietHours | None:
    """Parse a QUIET_HOURS setting, 'HH:MM-HH:MM' or 'off'/'none' (None: no quiet hours)."""
    cleaned = text.strip()
    if cleaned.lower() in _OFF:
        return None
    parts = _DASH.split(cleaned)
    if len(parts) != 2:
        raise ValueError(f"QUIET_HOURS {text!r} is not a start-end window: {_FORM}")
    start = _parse_time("start", parts[0].strip(), text)
    end = _parse_time("end", parts[1].strip(), text)
    if start == end:
        # Equal ends could mean "never quiet" or "always quiet"; neither is worth guessing.
        raise ValueError(
            f"QUIET_HOURS {text!r} starts and ends at the same time {parts[0].strip()!r}: {_FORM}"
        )
    return QuietHours(start, end)


def _parse_time(label: str, part: str, text: str) -> datetime.time:
    match = _TIME.fullmatch(part)
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"QUIET_HOURS {label} {part!r} in {text!r} is not a time 00:00-23:59: {_FORM}")
    return datetime.time(int(match[1]), int(match[2]))


def zone_or_default(zone: str | None, default: str) -> str:
    """Return `zone` if it is an IANA zone name zoneinfo knows, else `default`."""
    return zone if zone is not None and zone in _known_zones() else default


def next_allowed(at: datetime.datetime, quiet: QuietHours | None, zone: str) -> datetime.datetime:
    """Return, in UTC, the first instant from `at` on when the wall clock in `zone` is outside `quiet`."""
    if at.utcoffset() is None:
        raise ValueError(f"next_allowed needs a timezone-aware datetime, got naive {at.isoformat()}")
    tz = _zone(zone)
    at = at.astimezone(datetime.UTC)
    if quiet is None or not quiet.contains(_wall(at, tz)):
        return at
    # Between these points the wall clock runs forward without jumping, so it can leave the window
    # only by reaching `end` or by jumping at an offset change; the answer is the earliest such exit.
    jumps = (t for t in _offset_changes(at, tz) if not quiet.contains(_wall(t, tz)))
    return min(t for t in (*_wall_instants(at, quiet.end, tz), *jumps) if t > at)


@functools.cache
def _known_zones() -> frozenset[str]:
    # available_timezones() walks the tz database on disk, so read it once per process.
    return frozenset(available_timezones())


def _zone(zone: str) -> ZoneInfo:
    # Checked against the known names, not ZoneInfo's own errors: ZoneInfo also opens paths such as
    # 'posix/Europe/Berlin' and raises IsADirectoryError for 'Europe'.
    if zone not in _known_zones():
        raise ValueError(f"unknown time zone {zone!r}: expected an IANA name such as 'Europe/Berlin'")
    return ZoneInfo(zone)


def _wall(instant: datetime.datetime, tz: ZoneInfo) -> datetime.time:
    return instant.astimezone(tz).time()


def _wall_instants(at: datetime.datetime, wall: datetime.time, tz: ZoneInfo) -> Iterator[datetime.datetime]:
    """Every instant around `at` (a day before to two after) when the clock in `tz` shows `wall`."""
    today = at.astimezone(tz).date()
    for days in range(-1, 3):
        # fold=0 and fold=1 are the two readings of a wall time repeated when clocks fall back.
        for fold in (0, 1):
            local = datetime.datetime.combine(
                today + datetime.timedelta(days=days), wall.replace(fold=fold), tz
            )
            instant = local.astimezone(datetime.UTC)
            # zoneinfo also maps wall times that a forward jump skips; the clock never shows those.
            if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
                yield instant


def _offset_changes(at: datetime.datetime, tz: ZoneInfo) -> Iterator[datetime.datetime]:
    """The instants in the horizon after `at` when the UTC offset of `tz` changes (the clock jumps)."""
    first = math.floor(at.timestamp())
    # Real offset changes lie weeks apart, so hourly probes miss none; tz data puts each change on
    # a whole second, so bisecting integer timestamps finds it exactly.
    for low in range(first, first + _HORIZON_HOURS * _HOUR, _HOUR):
        high = low + _HOUR
        before = _offset(low, tz)
        if before == _offset(high, tz):
            continue
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if _offset(middle, tz) == before else (low, middle)
        yield datetime.datetime.fromtimestamp(high, datetime.UTC)


def _offset(timestamp: int, tz: ZoneInfo) -> datetime.timedelta | None:
    return datetime.datetime.fromtimestamp(timestamp, tz).utcoffset()
