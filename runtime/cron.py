"""Five-field cron expressions (minute hour day-of-month month day-of-week), for the backup schedule.

The runtime needs only "when is the next run after t": a few lines of matching rather than a new
dependency in every image. Fields take `*`, numbers, ranges `a-b`, lists `a,b` and steps `*/n`,
`a-b/n`; day of week 0-7 (0 and 7 are Sunday); as in cron, when both day fields are restricted a
day matches either. Names (`mon`, `jan`) and `@hourly`-style shortcuts are accepted too.
"""
from __future__ import annotations

import dataclasses
import datetime

SHORTCUTS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
NAMES = {
    3: {name: i + 1 for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())},
}


class CronError(ValueError):
    """Not a cron expression; the message names the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, moment: datetime.datetime) -> bool:
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def matches(self, moment: datetime.datetime) -> bool:
        return (moment.minute in self.minutes and moment.hour in self.hours
                and moment.month in self.months and self.day_matches(moment))

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first matching minute strictly after `moment` (searched up to five years ahead)."""
        candidate = moment.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        limit = candidate + datetime.timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months:
                candidate = (candidate.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
            elif not self.day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + datetime.timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += datetime.timedelta(minutes=1)
            else:
                return candidate
        raise CronError(f"cron expression {self.expression!r} never matches")


def _value(text: str, index: int) -> int:
    lowered = text.lower()
    if lowered in NAMES.get(index, {}):
        return NAMES[index][lowered]
    if not text.isdigit():
        raise CronError(f"{FIELDS[index][0]}: {text!r} is not a number")
    return int(text)


def _field(text: str, index: int) -> frozenset[int]:
    name, low, high = FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _value(first, index), _value(last, index)
        else:
            start = _value(body, index)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise CronError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse(expression: str) -> Schedule:
    text = SHORTCUTS.get(expression.strip().lower(), expression.strip())
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), found {len(fields)}")
    parsed = [_field(field, index) for index, field in enumerate(fields)]
    return Schedule(expression, *parsed, days_restricted=fields[2] != "*", weekdays_restricted=fields[4] != "*")
