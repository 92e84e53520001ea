"""Time parameters and the bucket grid: which instants each aggregate row covers.

Boundaries are computed here with zoneinfo, not in SQL, so a day in America/New_York is exactly
the instants between two local midnights (23 hours on 2026-03-08, 25 on 2026-11-01) and the
SQL only ever sees UTC instants.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import InvalidParameter

UTC = timezone.utc
HOUR = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Events are never stored before 1970; the upper bound keeps bucket arithmetic inside datetime.
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidParameter.of("tz", f"{name[:64]!r} is not an IANA time zone (like UTC or America/New_York)") from None


def parse_instant(value: str, parameter: str, zone: ZoneInfo) -> datetime:
    """ISO-8601 with an offset, or a local date/time read in `zone`."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidParameter.of(parameter, f"{value[:64]!r} is not an ISO-8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter.of(parameter, "out of range") from None
    if not EPOCH <= instant < LATEST:
        raise InvalidParameter.of(parameter, f"must be between {EPOCH.year} and {LATEST.year}")
    return instant


def micros(instant: datetime) -> int:
    """Exact integer microseconds since the epoch, for cursors (floats would round)."""
    return (instant - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    floor = floor_hour(t)
    return floor if floor == t else floor + HOUR


def floor_day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(t: datetime) -> datetime:
    floor = floor_day(t)
    return floor if floor == t else floor + timedelta(days=1)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    # fold=0: where midnight repeats, the day starts at its first occurrence; where a DST gap
    # skips it, the pre-transition offset lands exactly on the transition instant.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Bucket:
    label: datetime  # what the row shows: the start of the bucket on its grid
    lo: datetime  # [lo, hi): the instants counted, clipped to the query range
    hi: datetime
    flo: datetime  # [flo, fhi): the whole UTC hours inside [lo, hi), served by the rollups
    fhi: datetime
    dlo: datetime  # [dlo, dhi): the whole UTC days inside [flo, fhi), served by the daily rollup
    dhi: datetime


class Grid:
    """Buckets of one interval over [start, end): UTC hours, local days, or the whole range."""

    def __init__(self, interval: str, zone: ZoneInfo, start: datetime, end: datetime, counted_from: datetime | None = None):
        self.interval = interval
        self.zone = zone
        self.start = start
        self.end = end
        # Buckets count nothing before this (the retention's start), whatever their labels say.
        self.counted_from = start if counted_from is None else max(start, counted_from)

    def label_of(self, t: datetime) -> datetime:
        if self.interval == "hour":
            return floor_hour(t)
        if self.interval == "day":
            return local_midnight(t.astimezone(self.zone).date(), self.zone)
        return self.start

    def _next(self, label: datetime) -> datetime:
        if self.interval == "hour":
            return label + HOUR
        if self.interval == "day":
            return local_midnight(label.astimezone(self.zone).date() + timedelta(days=1), self.zone)
        return self.end

    def buckets_from(self, label: datetime) -> Iterator[Bucket]:
        while label < self.end:
            following = self._next(label)
            lo, hi = max(label, self.counted_from), min(following, self.end)
            if lo < hi:
                flo = min(ceil_hour(lo), hi)
                fhi = max(floor_hour(hi), flo)
                dlo = min(ceil_day(flo), fhi)
                yield Bucket(label, lo, hi, flo, fhi, dlo, max(floor_day(fhi), dlo))
            label = following

    def render(self, label: datetime) -> str:
        """The label as local time with its offset; UTC as Z."""
        return label.astimezone(self.zone).isoformat().replace("+00:00", "Z")
