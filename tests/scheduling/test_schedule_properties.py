"""Properties of schedule maths: what validation accepts can fire and be described; no stored row breaks a consumer."""
import json
import string
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import pytest
from celery import Celery
from flask import Flask
from flask_babel import force_locale
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from promptbeat.scheduling import schedules
from promptbeat.scheduling.entries import entry_key
from promptbeat.extensions import db
from promptbeat.models import ScheduleType, Task
from promptbeat.settings import Settings, celery_config
from promptbeat.scheduling.sync import reconcile
from promptbeat.validation import SCHEDULE_INPUTS, TaskInputError, validate_schedule
from web import i18n
from web.presenters import describe_schedule, schedule_preview, task_json

UTC = timezone.utc
# Enough examples to find the edges (calendar ends, DST, never-matching crons) in a few seconds each.
PROPERTY = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Shanghai", "Pacific/Kiritimati", "Etc/GMT+12",
         "Australia/Lord_Howe", "America/St_Johns", "Asia/Kathmandu"]
TEXT = st.text(alphabet=string.printable + "日本\u202e\x00", max_size=24)


def cron_field(low, high, extras=(), lax=True):
    """One cron field: *, a value, a range, a step or a list; lax goes one past each end of the field."""
    number = st.integers(low - lax, high + lax).map(str)
    return st.one_of(
        st.just("*"), number, st.sampled_from(extras or ["*"]),
        st.tuples(number, number).map("-".join),
        st.tuples(st.sampled_from(["*", str(low)]), st.integers(1 - lax, high + lax)).map(lambda t: f"{t[0]}/{t[1]}"),
        st.lists(number, min_size=2, max_size=3).map(",".join),
    )


def cron_expressions(lax):
    return st.tuples(
        cron_field(0, 59, lax=lax), cron_field(0, 23, lax=lax),
        cron_field(1, 31, ["L", "15W", "?", "29", "30", "31"], lax=lax),
        cron_field(1, 12, ["FEB", "2", "4,6,9,11", "DEC-JAN"], lax=lax),
        cron_field(0, 7, ["MON-FRI", "5#5", "?", "L5", "FRI-MON", "0-7"], lax=lax),
    ).map(" ".join)


CRON = st.one_of(
    cron_expressions(lax=True),
    st.sampled_from(["0 0 31 2 *", "0 0 30 2 *", "0 0 29 2 *", "0 0 1 1 6#5", "R 0 * * *", "0 0 9 * * *", "5-5 * * * *",
                     "* * * 1-0 *", ""]),
    TEXT,
)


def near(now):
    # Whole minutes, at least three away from now: validation and the property read the clock apart.
    minutes = st.tuples(st.booleans(), st.integers(3, 12 * 525_600)).map(lambda t: t[1] if t[0] else -t[1])
    return minutes.map(lambda m: (now + timedelta(minutes=m)).replace(second=0, microsecond=0).isoformat())


def moments(now):
    """Dates as a client sends them: anywhere in the calendar, near now, with or without an offset, or junk."""
    offsets = st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))))
    anywhere = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                            timezones=offsets)
    edges = st.sampled_from(["9999-12-31T23:59:59-05:00", "0001-01-01T00:00+01:00", "9999-12-31T23:59",
                             "0001-01-01T00:00"])
    return st.one_of(st.none(), anywhere.map(datetime.isoformat), near(now), edges, TEXT)


HHMM = st.tuples(st.integers(0, 25), st.integers(0, 61)).map(lambda t: "%02d:%02d" % t)


def schedule_inputs(now):
    """Any mix of schedule fields, each valid, at an edge or junk: mostly refused."""
    return st.fixed_dictionaries({}, optional={
        "schedule_type": st.one_of(st.sampled_from(list(ScheduleType)), TEXT),
        "interval_minutes": st.one_of(st.integers(-5, 600_000), TEXT),
        "time": st.one_of(HHMM, TEXT),
        "cron": CRON,
        "timezone": st.one_of(st.sampled_from(ZONES), TEXT),
        "run_at": moments(now), "start_at": moments(now), "end_at": moments(now),
        "max_runs": st.one_of(st.integers(-1, 20), TEXT),
        "catchup_seconds": st.one_of(st.integers(-1, 10**6), TEXT),
    })


def likely_schedules(now):
    """One schedule type with its own field, a known zone and bounds near now: mostly accepted."""
    bound = st.one_of(st.none(), st.none(), near(now))
    return st.fixed_dictionaries({
        "schedule_type": st.sampled_from(list(ScheduleType)),
        "interval_minutes": st.one_of(st.integers(1, 1440), st.integers(1, 527_040)),
        "time": HHMM, "cron": cron_expressions(lax=False), "timezone": st.sampled_from(ZONES), "run_at": near(now),
        "start_at": bound, "end_at": bound, "max_runs": st.one_of(st.none(), st.integers(1, 5)),
    })


@pytest.fixture(scope="module")
def babel_app():
    """The pages' translations and locale machinery, without a database."""
    flask_app = Flask("web")
    i18n.init_app(flask_app)
    with flask_app.app_context():
        yield flask_app


def in_both_languages(task):
    with force_locale("en"):
        english = describe_schedule(task)
    with force_locale("zh_Hans"):
        chinese = describe_schedule(task)
    return english, chinese


def has_chinese(words):
    return any("\u4e00" <= character <= "\u9fff" for character in words)


NOW = datetime.now(UTC)


@PROPERTY
@given(data=st.one_of(likely_schedules(NOW), schedule_inputs(NOW)))
def test_an_accepted_schedule_fires_within_the_horizon_and_has_words_in_both_languages(babel_app, data):
    try:
        with force_locale("zh_Hans"):
            preview = schedule_preview(data, Settings(secret_key="x"), describe_schedule)
    except TaskInputError as refused:
        event(f"refused: {sorted(refused.errors)}")
        assert refused.errors and set(refused.errors) <= set(SCHEDULE_INPUTS)
        assert all(isinstance(message, str) and message for message in refused.errors.values())
        return
    values = validate_schedule(data, Settings(secret_key="x"))
    event(f"accepted: {values['schedule_type']}")
    now = datetime.now(UTC)
    assert preview["runs"] and now - timedelta(seconds=5) <= preview["runs"][0] <= now + schedules.HORIZON
    task = Task(**values, enabled=True, anchor_at=now)
    runs = schedules.next_runs(task, 1, now=now)
    assert runs and now <= runs[0] <= now + schedules.HORIZON, (values, runs)
    assert schedules.problem(task, now) is None
    english, chinese = in_both_languages(task)
    assert chinese == preview["description"]
    # In words, not the raw expression the describer falls back to.
    assert not english.startswith("cron ") and not has_chinese(english), english
    assert has_chinese(chinese), chinese


def stored_moments():
    anywhere = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                            timezones=st.just(UTC))
    # Within 400 days of either end of the calendar, where a step or a zone falls off it.
    edges = st.tuples(st.sampled_from([datetime.min, datetime.max - timedelta(days=400)]),
                      st.integers(0, 400 * 1440)).map(
        lambda t: (t[0] + timedelta(minutes=t[1])).replace(second=0, microsecond=0, tzinfo=UTC))
    return st.one_of(st.none(), anywhere, edges, st.just(NOW))


# Rows as the database can hold them, whatever validation thought: any text, any integer its column holds.
STORED_TASKS = st.builds(
    Task, id=st.integers(1, 10**6), name=st.just("t"), prompt=st.just("p"), model=st.just("m"),
    schedule_type=st.one_of(st.sampled_from(list(ScheduleType)), TEXT),
    interval_seconds=st.one_of(st.none(), st.integers(-10, 2**31 - 1)),
    fixed_time=st.one_of(st.none(), st.tuples(st.integers(0, 99), st.integers(0, 99)).map(lambda t: "%d:%d" % t),
                         TEXT),
    cron=st.one_of(st.none(), CRON), timezone=st.one_of(st.sampled_from(ZONES), TEXT),
    run_at=stored_moments(), start_at=stored_moments(), end_at=stored_moments(), anchor_at=stored_moments(),
    catchup_seconds=st.one_of(st.none(), st.integers(-5, 2**31 - 1)),
    max_runs=st.one_of(st.none(), st.integers(-1, 10**7)), run_count=st.integers(0, 10),
    enabled=st.booleans(), completed_at=st.none(), created_at=st.just(NOW), updated_at=st.just(NOW),
)


@pytest.fixture(scope="module")
def beat_app():
    celery_app = Celery("promptbeat-properties", set_as_current=False)
    celery_app.config_from_object(celery_config(Settings(secret_key="test")))
    celery_app.redbeat_redis = fakeredis.FakeRedis(decode_responses=True)
    yield celery_app
    celery_app.redbeat_redis.close()


GOOD = Task(id=10**6 + 1, schedule_type=ScheduleType.INTERVAL, interval_seconds=300, timezone="UTC", enabled=True,
            anchor_at=NOW)


@PROPERTY
@given(task=STORED_TASKS)
def test_no_stored_row_breaks_next_runs_words_json_or_reconcile(babel_app, beat_app, task):
    now = datetime.now(UTC)
    runs = schedules.next_runs(task, 5, now=now)
    assert all(isinstance(moment, datetime) for moment in runs) and runs == sorted(runs)
    reason = schedules.problem(task, now)
    assert reason is None or isinstance(reason, str)
    assert all(in_both_languages(task))
    json.dumps(task_json(task))
    try:
        schedule = schedules.task_schedule(task)
    except schedules.ScheduleError:
        pass
    else:  # what beat asks of an entry
        last = task.anchor_at or now
        schedule.is_due(last)
        slot = schedule.newest_slot(last, now)
        if slot is not None:
            schedule.catchup_window(slot)
    beat_app.redbeat_redis.flushall()
    result = reconcile(beat_app, [task, GOOD])
    assert result.added + result.skipped == (2 if task.enabled else 1)
    assert beat_app.redbeat_redis.zscore(beat_app.redbeat_conf.schedule_key, entry_key(beat_app, GOOD.id))


def text_column(size):
    # What a text column takes on both databases: PostgreSQL refuses NUL.
    return st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=size)


# The same rows, as the database's columns hold them.
DATABASE_ROWS = st.fixed_dictionaries({
    "schedule_type": st.one_of(st.sampled_from(list(ScheduleType)), text_column(16)),
    "interval_seconds": st.one_of(st.none(), st.integers(-10, 2**31 - 1)),
    "fixed_time": st.one_of(st.none(), text_column(5)),
    "cron": st.one_of(st.none(), CRON.filter(lambda c: len(c) <= 120 and "\x00" not in c)),
    "timezone": st.one_of(st.sampled_from(ZONES), text_column(64)),
    "run_at": stored_moments(), "start_at": stored_moments(), "end_at": stored_moments(),
    "anchor_at": stored_moments(), "catchup_seconds": st.one_of(st.none(), st.integers(-5, 2**31 - 1)),
    "enabled": st.booleans(),
})


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(row=DATABASE_ROWS)
def test_no_stored_row_breaks_the_list_the_dashboard_or_its_page(app, api, signed_in, row):
    # Function-scoped fixtures are shared by the examples: each example removes its own row.
    with app.app_context():
        task = Task(name="Stored row", prompt="p", model="fake-model", **row)
        db.session.add(task)
        db.session.commit()
        task_id = task.id
    try:
        for path in ("/tasks", f"/tasks/{task_id}"):
            assert api.get(path).status_code == 200, path
        for path in ("/", "/?sort=updated&q=Stored", f"/tasks/{task_id}"):
            assert signed_in.get(path, headers={"Accept-Language": "zh-CN"}).status_code == 200, path
    finally:
        with app.app_context():
            db.session.execute(db.delete(Task).where(Task.id == task_id))
            db.session.commit()



def clock_changes(zone_name, year):
    """The instants (UTC) in a year at which a zone's clocks change, to the quarter hour, with the change."""
    zone, changes = ZoneInfo(zone_name), []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += timedelta(minutes=15)
        if moment.astimezone(zone).utcoffset() != offset:
            changes.append((zone_name, moment, moment.astimezone(zone).utcoffset() - offset))
            offset = moment.astimezone(zone).utcoffset()
    return changes


CLOCK_CHANGES = [change for zone in ZONES for change in clock_changes(zone, 2026)]


@st.composite
def repeated_wall_times(draw):
    """A moment in the wall-clock time a fall-back repeats, and a daily cron at or before it in that repeat."""
    zone, instant, shift = draw(st.sampled_from([change for change in CLOCK_CHANGES if change[2] < timedelta(0)]))
    minutes = draw(st.integers(0, -shift // timedelta(minutes=1) - 1))
    fire = (instant + timedelta(minutes=draw(st.integers(0, minutes)))).astimezone(ZoneInfo(zone))
    return zone, instant + timedelta(minutes=minutes), f"{fire.minute} {fire.hour} * * *"


# A zone and a moment, within three hours of one of its clock changes or anywhere in two decades, and a cron:
# daily times (the repeated and skipped ones among them), hourly ones, or any valid expression.
ZONED_CRONS = st.one_of(
    repeated_wall_times(),
    st.tuples(
        st.one_of(
            st.tuples(st.sampled_from(CLOCK_CHANGES), st.integers(-180, 180)).map(
                lambda t: (t[0][0], t[0][1] + timedelta(minutes=t[1]))),
            st.tuples(st.sampled_from(ZONES), st.datetimes(min_value=datetime(2016, 1, 1),
                                                           max_value=datetime(2036, 1, 1), timezones=st.just(UTC))),
        ),
        st.one_of(
            st.tuples(st.sampled_from([0, 15, 30, 45]), st.integers(0, 23)).map(lambda t: f"{t[0]} {t[1]} * * *"),
            st.sampled_from(["0 * * * *", "*/20 * * * *", "30 1-3 * * *", "0 2 * * 0"]),
            cron_expressions(lax=False).filter(schedules.valid_cron),
        ),
    ).map(lambda t: (*t[0], t[1])),
)


@PROPERTY
@given(case=ZONED_CRONS)
def test_the_newest_fire_time_is_one_next_after_gives_and_no_later_one_is_due(case):
    zone, moment, expr = case
    cron = schedules.ZonedCron(expr, zone)
    newest = cron.newest_at_or_before(moment)
    if newest is None:
        event("no fire time at or before")
        return
    assert newest <= moment
    # A fire time by next_after's rules (a repeated wall-clock time it leaves out is none)...
    assert cron.next_after(newest - timedelta(minutes=1)) == newest, (expr, zone, moment, newest)
    # ...and the newest one: next_after's next fire time comes after the moment.
    following = cron.next_after(newest)
    assert following is None or following > moment, (expr, zone, moment, newest, following)
