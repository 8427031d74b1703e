"""Times as the viewer reads them: in their own zone, with a task's zone beside it when that differs."""
import functools
from datetime import datetime

from flask import g
from flask_login import current_user

from promptbeat.scheduling import schedules

DEFAULT_ZONE = "UTC"
# Longer than any IANA name; a longer value is refused before it is looked up.
MAX_ZONE_LENGTH = 64


def viewer_zone():
    """The signed-in user's zone name, else UTC; worked out once per request."""
    zone = g.get("viewer_zone")
    if zone is None:
        chosen = None
        if not g.get("database_unavailable") and current_user and current_user.is_authenticated:
            chosen = current_user.timezone
        zone = g.viewer_zone = chosen if schedules.known_zone(chosen) else DEFAULT_ZONE
    return zone


# Zone database entries that are not places: the machine's own zone and the POSIX and leap-second copies.
NOT_PLACES = ("Etc/", "posix/", "right/", "SystemV/")


@functools.cache
def zone_names():
    """The zone pickers' choices, sorted: UTC and every Area/Location name (older aliases are still accepted)."""
    return ("UTC",) + tuple(sorted(name for name in schedules.known_zones()
                                   if "/" in name and not name.startswith(NOT_PLACES)))


def _in(moment, zone_name):
    local, _name = schedules.local_time(moment, zone_name)
    return local


def when(moment, seconds=False):
    """Date and time in the viewer's zone with its abbreviation, e.g. "2030-01-31 09:00 CET"; "—" for none."""
    if not isinstance(moment, datetime):
        return "—"
    local = _in(moment, viewer_zone())
    return local.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")


def clock(moment):
    """Time of day in the viewer's zone, to the second, e.g. "09:00:05"."""
    return _in(moment, viewer_zone()).strftime("%H:%M:%S") if isinstance(moment, datetime) else "—"


def in_task_zone(moment, task_zone):
    """The same moment in the task's zone, e.g. "09:00 Asia/Shanghai"; empty when it is the viewer's zone."""
    zone = task_zone or DEFAULT_ZONE
    if not isinstance(moment, datetime) or zone == viewer_zone():
        return ""
    local, zone = schedules.local_time(moment, zone)
    same_day = local.date() == _in(moment, viewer_zone()).date()
    return f"{local.strftime('%H:%M' if same_day else '%Y-%m-%d %H:%M')} {zone}"


def parse_iso(text):
    """A stored ISO 8601 string (attempt records) as a datetime, or None."""
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def init_app(app):
    app.jinja_env.filters.update(when=when, clock=clock, in_task_zone=in_task_zone, parse_iso=parse_iso)
    app.jinja_env.globals.update(viewer_zone=viewer_zone, zone_names=zone_names)
