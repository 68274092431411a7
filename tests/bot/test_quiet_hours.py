"""Quiet hours: parsing QUIET_HOURS and postponing sends to the recipient's first allowed local minute."""

from __future__ import annotations

import datetime
import math
import re
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.quiet_hours import QuietHours, next_allowed, parse_quiet_hours, zone_or_default

UTC = datetime.UTC
MINUTE = datetime.timedelta(minutes=1)
NIGHT = QuietHours(datetime.time(21), datetime.time(8))  # the default, 21:00-08:00
# Australia/Lord_Howe shifts by 30 minutes for DST; Asia/Kolkata is +05:30 all year.
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
# (zone, UTC instant of a 2026 offset change), found by stepping minute by minute through zoneinfo.
DST_CHANGES = [
    ("Europe/Berlin", datetime.datetime(2026, 3, 29, 1, tzinfo=UTC)),  # 02:00 CET -> 03:00 CEST
    ("Europe/Berlin", datetime.datetime(2026, 10, 25, 1, tzinfo=UTC)),  # 03:00 CEST -> 02:00 CET
    ("America/New_York", datetime.datetime(2026, 3, 8, 7, tzinfo=UTC)),  # 02:00 EST -> 03:00 EDT
    ("America/New_York", datetime.datetime(2026, 11, 1, 6, tzinfo=UTC)),  # 02:00 EDT -> 01:00 EST
    ("Australia/Lord_Howe", datetime.datetime(2026, 4, 4, 15, tzinfo=UTC)),  # 02:00 +11 -> 01:30 +10:30
    ("Australia/Lord_Howe", datetime.datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),  # 02:00 +10:30 -> 02:30 +11
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime.datetime:
    return datetime.datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        # November: CET = UTC+1, so 21:00-08:00 local is 20:00-07:00 UTC.
        (utc(2025, 11, 12, 21, 30), utc(2025, 11, 13, 7)),  # 21:30+1 = 22:30 -> 08:00-1 = 07:00 next day
        (utc(2025, 11, 12, 6, 59), utc(2025, 11, 12, 7)),  # 06:59+1 = 07:59 -> 08:00-1 = 07:00
        (utc(2025, 11, 12, 7), utc(2025, 11, 12, 7)),  # 07:00+1 = 08:00, end is exclusive
        (utc(2025, 11, 12, 19, 59), utc(2025, 11, 12, 19, 59)),  # 19:59+1 = 20:59, before start
        (utc(2025, 11, 12, 20), utc(2025, 11, 13, 7)),  # 20:00+1 = 21:00, start is inclusive
        # July: CEST = UTC+2, so the same window is 19:00-06:00 UTC.
        (utc(2025, 7, 9, 20, 30), utc(2025, 7, 10, 6)),  # 20:30+2 = 22:30 -> 08:00-2 = 06:00 next day
        (utc(2025, 7, 9, 5, 59), utc(2025, 7, 9, 6)),  # 05:59+2 = 07:59 -> 06:00
        (utc(2025, 7, 9, 6), utc(2025, 7, 9, 6)),  # 06:00+2 = 08:00
        (utc(2025, 7, 9, 18, 59), utc(2025, 7, 9, 18, 59)),  # 18:59+2 = 20:59
        (utc(2025, 7, 9, 19), utc(2025, 7, 10, 6)),  # 19:00+2 = 21:00
    ],
)
def test_berlin_night_is_postponed_to_eight_local(
    due: datetime.datetime, expected: datetime.datetime
) -> None:
    """A send due between 21:00 and 08:00 Berlin time moves to 08:00 Berlin time, in winter and summer."""
    assert expected == next_allowed(due, NIGHT, "Europe/Berlin")


def test_window_is_read_in_the_recipients_zone() -> None:
    """The same instant is quiet in Berlin but allowed in New York, and vice versa."""
    evening = utc(2026, 1, 15, 23)  # Berlin 23:00+1 = 00:00 (quiet); New York 23:00-5 = 18:00 (allowed)
    night = utc(2026, 1, 15, 2, 30)  # New York 02:30-5 = 21:30 the day before (quiet); Berlin 03:30 (quiet)
    morning = utc(2026, 1, 15, 9)  # Berlin 10:00 (allowed); New York 04:00 (quiet)
    assert (utc(2026, 1, 16, 7), evening) == (
        next_allowed(evening, NIGHT, "Europe/Berlin"),  # 08:00-1 = 07:00 UTC next day
        next_allowed(evening, NIGHT, "America/New_York"),
    )
    assert (utc(2026, 1, 15, 13), morning, utc(2026, 1, 15, 13)) == (
        next_allowed(night, NIGHT, "America/New_York"),  # 08:00+5 = 13:00 UTC
        next_allowed(morning, NIGHT, "Europe/Berlin"),
        next_allowed(morning, NIGHT, "America/New_York"),
    )


def test_half_hour_offset_zone() -> None:
    """In Kolkata (UTC+05:30) a send due at 21:30 local waits until 08:00 local, 02:30 UTC."""
    # 16:00+5:30 = 21:30 local -> 08:00-5:30 = 02:30 UTC next day
    assert utc(2026, 1, 16, 2, 30) == next_allowed(utc(2026, 1, 15, 16), NIGHT, "Asia/Kolkata")


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (utc(2026, 5, 4, 12), utc(2026, 5, 4, 13)),
        (utc(2026, 5, 4, 12, 30), utc(2026, 5, 4, 13)),
        (utc(2026, 5, 4, 11, 59), utc(2026, 5, 4, 11, 59)),
        (utc(2026, 5, 4, 13), utc(2026, 5, 4, 13)),
    ],
)
def test_window_that_does_not_wrap_midnight(due: datetime.datetime, expected: datetime.datetime) -> None:
    """A 12:00-13:00 window postpones only sends due from 12:00 up to (not including) 13:00."""
    assert expected == next_allowed(due, parse_quiet_hours("12:00-13:00"), "UTC")


def test_off_never_postpones() -> None:
    """With QUIET_HOURS=off a send due at 03:00 local goes out at once."""
    due = utc(2026, 1, 15, 2)  # Berlin 03:00
    assert due == next_allowed(due, parse_quiet_hours("off"), "Europe/Berlin")


def test_result_is_the_same_instant_in_utc() -> None:
    """An allowed time given in another zone comes back as the same instant with tzinfo datetime.UTC."""
    due = datetime.datetime(2026, 1, 15, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=-3)))
    result = next_allowed(due, NIGHT, "Europe/Berlin")  # 15:00 UTC = 16:00 Berlin, allowed
    assert (utc(2026, 1, 15, 15), UTC) == (result, result.tzinfo)


def test_end_skipped_by_spring_forward_moves_to_the_jump() -> None:
    """If the window's end is skipped when clocks spring forward, the send goes out at the jump."""
    # Berlin 2026-03-29: at 01:00 UTC the clock goes 02:00 CET -> 03:00 CEST, so 02:30 never shows.
    due = utc(2026, 3, 29, 0, 30)  # 00:30+1 = 01:30 CET, inside 01:00-02:30
    assert utc(2026, 3, 29, 1) == next_allowed(due, parse_quiet_hours("01:00-02:30"), "Europe/Berlin")


def test_end_repeated_by_fall_back_uses_the_first_occurrence() -> None:
    """If the window's end shows twice when clocks fall back, the send goes out at the first one."""
    # Berlin 2026-10-25: at 01:00 UTC the clock goes 03:00 CEST -> 02:00 CET; 02:30 shows at
    # 02:30-2 = 00:30 UTC and again at 02:30-1 = 01:30 UTC.
    due = utc(2026, 10, 24, 23, 30)  # 23:30+2 = 01:30 CEST
    assert utc(2026, 10, 25, 0, 30) == next_allowed(due, parse_quiet_hours("01:00-02:30"), "Europe/Berlin")


def test_fall_back_into_the_window_waits_for_the_second_end() -> None:
    """A send due in the repeated hour after falling back waits for the end's second occurrence."""
    due = utc(2026, 10, 25, 1, 10)  # 01:10+1 = 02:10 CET, back inside 01:00-02:30
    assert utc(2026, 10, 25, 1, 30) == next_allowed(due, parse_quiet_hours("01:00-02:30"), "Europe/Berlin")


def test_fall_back_out_of_the_window_ends_it_early() -> None:
    """When falling back sets the clock to before the window's start, that instant is already allowed."""
    # 00:45+2 = 02:45 CEST, inside 02:30-05:00; at 01:00 UTC the clock reads 02:00 CET, outside.
    due = utc(2026, 10, 25, 0, 45)
    assert utc(2026, 10, 25, 1) == next_allowed(due, parse_quiet_hours("02:30-05:00"), "Europe/Berlin")


@pytest.mark.parametrize("text", ["21:00-08:00", "21:00\u201308:00", " 21:00 - 08:00 ", "21:00 \u2013 08:00"])
def test_parse_accepts_hyphen_en_dash_and_spaces(text: str) -> None:
    """A window parses with a hyphen or an en dash and spaces around either part."""
    assert NIGHT == parse_quiet_hours(text)


@pytest.mark.parametrize("text", ["off", "OFF", " Off ", "none", "NONE"])
def test_parse_off(text: str) -> None:
    """'off' and 'none', in any case, mean no quiet hours."""
    assert None is parse_quiet_hours(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("21:00-24:00", "end '24:00'"),
        ("7:5-08:00", "start '7:5'"),
        ("21:00-8:00", "end '8:00'"),
        ("21:60-08:00", "start '21:60'"),
        ("-08:00", "start ''"),
        ("21:00", "'21:00' is not a start-end window"),
        ("21:00-08:00-09:00", "'21:00-08:00-09:00' is not a start-end window"),
        ("", "'' is not a start-end window"),
        ("08:00-08:00", "starts and ends at the same time '08:00'"),
    ],
)
def test_parse_errors_name_the_bad_part(text: str, named: str) -> None:
    """A bad setting is refused with a message naming the bad part and the expected form."""
    with pytest.raises(ValueError, match="QUIET_HOURS") as caught:
        parse_quiet_hours(text)
    message = str(caught.value)
    assert (True, True) == (named in message, "'HH:MM-HH:MM'" in message and "'off'" in message)


def test_naive_datetime_is_refused() -> None:
    """A naive due time is a bug upstream, so it raises instead of guessing a zone."""
    naive = utc(2026, 1, 15, 12).replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed(naive, NIGHT, "Europe/Berlin")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe", "", "../etc/passwd", "Europe/Berlin "])
def test_unknown_zone_is_refused_by_name(zone: str) -> None:
    """An unknown zone raises ValueError naming it, even when there are no quiet hours to apply."""
    with pytest.raises(ValueError, match=re.escape(f"unknown time zone {zone!r}")):
        next_allowed(utc(2026, 1, 15, 12), None, zone)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("America/New_York", "America/New_York"),
        ("UTC", "UTC"),
        (None, "Europe/Berlin"),
        ("", "Europe/Berlin"),
        ("Mars/Olympus_Mons", "Europe/Berlin"),
        ("Europe", "Europe/Berlin"),
    ],
)
def test_zone_or_default(zone: str | None, expected: str) -> None:
    """A known IANA zone is kept; a missing or unknown one falls back to the default."""
    assert expected == zone_or_default(zone, "Europe/Berlin")


def check_first_allowed_minute(at: datetime.datetime, quiet: QuietHours, zone: str) -> None:
    """Assert that next_allowed gives the first instant from `at` on whose local time is outside `quiet`."""
    result = next_allowed(at, quiet, zone)

    def inside(instant: datetime.datetime) -> bool:
        return quiet.contains(instant.astimezone(ZoneInfo(zone)).time())

    assert (True, False, UTC) == (result >= at, inside(result), result.tzinfo)
    if result == at:
        assert False is inside(at)
        return
    assert (True, True) == (inside(at), inside(result - MINUTE))
    # Every whole minute between `at` and the result is still quiet: no earlier allowed minute exists.
    first = math.ceil(at.timestamp() / 60) * 60
    minutes = range(first, math.floor(result.timestamp()), 60)
    assert [] == [m for m in minutes if not inside(datetime.datetime.fromtimestamp(m, UTC))]


windows = st.tuples(st.integers(0, 1439), st.integers(0, 1439)).filter(lambda w: w[0] != w[1])


def window(minutes: tuple[int, int]) -> QuietHours:
    start, end = (datetime.time(m // 60, m % 60) for m in minutes)
    return QuietHours(start, end)


@settings(database=None)
@given(
    seconds=st.integers(int(utc(2000, 1, 1).timestamp()), int(utc(2035, 12, 31, 23, 59).timestamp())),
    micros=st.integers(0, 999_999),
    minutes=windows,
    zone=st.sampled_from(ZONES),
    given_in=st.sampled_from(ZONES),
)
def test_property_first_allowed_minute(
    seconds: int, micros: int, minutes: tuple[int, int], zone: str, given_in: str
) -> None:
    """For any instant, window and zone, the result is the first instant whose local time is allowed."""
    at = datetime.datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    check_first_allowed_minute(at.astimezone(ZoneInfo(given_in)), window(minutes), zone)


# Window edges mostly in 01:00-03:30 local, where the DST jumps happen.
night_minutes = st.integers(60, 210) | st.integers(0, 1439)


@settings(database=None)
@given(
    change=st.sampled_from(DST_CHANGES),
    shift=st.integers(-30 * 60, 30 * 60),
    minutes=st.tuples(night_minutes, night_minutes).filter(lambda w: w[0] != w[1]),
)
def test_property_first_allowed_minute_around_dst(
    change: tuple[str, datetime.datetime], shift: int, minutes: tuple[int, int]
) -> None:
    """Within 30 hours of a DST change, the result is still the first instant whose local time is allowed."""
    zone, instant = change
    check_first_allowed_minute(instant + shift * MINUTE, window(minutes), zone)
