"""A schedule in plain words, in English or Chinese, from one table of phrases."""
import logging
from dataclasses import dataclass

from cron_descriptor import Options, get_description

from promptbeat.models import ScheduleType
from promptbeat.scheduling.schedules import local_time

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phrases:
    """Every phrase a description is built from, in one language."""

    every: str
    once_at: str
    once: str
    daily: str
    cron: str
    cron_raw: str
    starts: str
    ends: str
    at_most: tuple[str, str]
    joiner: str
    # (singular, plural, seconds) per unit, largest first; the singular alone when the count is 1 and single_bare.
    units: tuple[tuple[str, str, int], ...]
    counted: str
    seconds: str
    single_bare: bool
    cron_locale: str | None
    names: dict[str, str]


_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]

PHRASES = {
    "en": Phrases(every="Every {duration}", once_at="Once, at {time} ({zone})", once="Once",
                  daily="Every day at {time} ({zone})", cron="{words} ({zone})", cron_raw="cron {cron} ({zone})",
                  starts="from {time} UTC", ends="until {time} UTC", at_most=("at most {n} run", "at most {n} runs"),
                  joiner=", ", units=(("day", "days", 86400), ("hour", "hours", 3600), ("minute", "minutes", 60)),
                  counted="{n} {unit}", seconds="{n} seconds", single_bare=False, cron_locale=None, names={}),
    "zh": Phrases(every="每{duration}", once_at="仅一次，于 {time}（{zone}）", once="仅一次",
                  daily="每天 {time}（{zone}）", cron="{words}（{zone}）", cron_raw="cron {cron}（{zone}）",
                  starts="自 {time} UTC 起", ends="至 {time} UTC 止", at_most=("最多运行 {n} 次", "最多运行 {n} 次"),
                  joiner="，", units=(("天", "天", 86400), ("小时", "小时", 3600), ("分钟", "分钟", 60)),
                  counted=" {n} {unit}", seconds=" {n} 秒", single_bare=True, cron_locale="zh_CN",
                  # cron-descriptor's zh_CN leaves the names of days and months in English.
                  names={**dict(zip(_WEEKDAYS, ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"])),
                         **dict(zip(_MONTHS, [f"{n}月" for n in range(1, 13)]))}),
}


def language_of(locale):
    """The phrase table's language for a locale code ("zh_Hans" -> "zh"); English for anything else."""
    return "zh" if str(locale or "").startswith("zh") else "en"


def describe(task, language="en"):
    """The schedule in plain words, for lists and pages; never fails, whatever the row holds."""
    phrases = PHRASES[language]
    zone = task.timezone or "UTC"
    if task.schedule_type == ScheduleType.INTERVAL:
        words = phrases.every.format(duration=_duration(task.interval_seconds, phrases))
    elif task.schedule_type == ScheduleType.ONCE:
        local, zone = local_time(task.run_at, zone)
        words = phrases.once_at.format(time=f"{local:%Y-%m-%d %H:%M}", zone=zone) if local else phrases.once
    elif task.schedule_type == ScheduleType.FIXED_TIME:
        words = phrases.daily.format(time=task.fixed_time, zone=zone)
    else:
        words = _cron(task.cron, zone, phrases)
    return words + _bounds(task, phrases)


def _cron(expression, zone, phrases):
    try:
        options = Options()
        options.use_24hour_time_format = True
        if phrases.cron_locale:
            options.locale_code = phrases.cron_locale
        words = get_description(expression, options)
    except Exception:  # cron-descriptor raises several types; the raw expression is a fine fallback
        logger.debug("could not describe cron %r", expression, exc_info=True)
        return phrases.cron_raw.format(cron=expression, zone=zone)
    for english, translated in phrases.names.items():
        words = words.replace(english, translated)
    return phrases.cron.format(words=words, zone=zone)


def _bounds(task, phrases):
    parts = []
    if task.start_at:
        parts.append(phrases.starts.format(time=f"{task.start_at:%Y-%m-%d %H:%M}"))
    if task.end_at:
        parts.append(phrases.ends.format(time=f"{task.end_at:%Y-%m-%d %H:%M}"))
    if task.max_runs:
        parts.append(phrases.at_most[task.max_runs != 1].format(n=task.max_runs))
    return (phrases.joiner + phrases.joiner.join(parts)) if parts else ""


def _duration(seconds, phrases):
    if isinstance(seconds, int) and seconds > 0:
        for singular, plural, size in phrases.units:
            if seconds % size == 0:
                count = seconds // size
                if count == 1 and phrases.single_bare:
                    return singular
                return phrases.counted.format(n=count, unit=singular if count == 1 else plural)
    return phrases.seconds.format(n=seconds)
