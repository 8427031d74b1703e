"""Prometheus metrics read from the database and Redis at scrape time.

Counters kept in process memory would be wrong here: gunicorn runs several web
processes and the runs happen in other containers altogether. The database is the
truth, so each scrape aggregates it (one pass over executions, plus an indexed count
of tasks) and reads the queue length from Redis. Every web process answers the same.
"""
import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func

from promptbeat.extensions import db
from promptbeat.health import redis_client
from promptbeat.models import ChannelKind, DeliveryStatus, Execution, Task, Trigger
from promptbeat.notify import ledger
from promptbeat.runs.budget import ERROR_CLASS as BUDGET_EXCEEDED
from promptbeat.runs.states import RunStatus

logger = logging.getLogger(__name__)
# Run durations in seconds: LLM calls take from a fraction of a second to minutes.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class PromptbeatCollector:
    """A prometheus_client collector over one Flask app's database and Redis."""

    def __init__(self, app):
        self.app = app

    def describe(self):
        # Describing nothing keeps registration from running a scrape's queries.
        return []

    def collect(self):
        with self.app.app_context():
            try:
                yield from self._run_metrics()
                yield self._enabled_tasks()
                yield self._delivery_attempts()
            finally:
                db.session.remove()
        yield from self._queue_metrics()

    def _run_metrics(self):
        millis = [int(bound * 1000) for bound in DURATION_BUCKETS]
        bucket_columns = [func.sum(case((Execution.duration_ms <= ms, 1), else_=0)) for ms in millis]
        rows = db.session.execute(
            db.select(
                Execution.status, Execution.trigger, func.count(),
                func.count(Execution.duration_ms), func.coalesce(func.sum(Execution.duration_ms), 0),
                func.coalesce(func.sum(Execution.prompt_tokens), 0),
                func.coalesce(func.sum(Execution.completion_tokens), 0),
                func.coalesce(func.sum(Execution.cost_usd), 0),
                func.count().filter(Execution.error_class == BUDGET_EXCEEDED),
                *bucket_columns,
            ).group_by(Execution.status, Execution.trigger)
        ).all()

        runs = GaugeMetricFamily("promptbeat_runs", "Runs (executions) by current status and trigger.",
                                 labels=["status", "trigger"])
        duration = HistogramMetricFamily("promptbeat_run_duration_seconds",
                                         "Time spent calling the model, per finished run.",
                                         labels=["status", "trigger"])
        tokens = CounterMetricFamily("promptbeat_tokens", "Tokens used by runs, by kind.", labels=["kind", "trigger"])
        cost = CounterMetricFamily("promptbeat_cost_usd", "Estimated cost of runs in USD, from the price table.",
                                   labels=["trigger"])
        stops = CounterMetricFamily("promptbeat_budget_stops", "Runs a budget stopped before they called the model.",
                                    labels=["trigger"])
        prompt_by_trigger, completion_by_trigger, cost_by_trigger = {}, {}, {}
        stops_by_trigger = {str(trigger): 0 for trigger in Trigger}
        # Every status and trigger has its series, at 0 until a run has it, so a dashboard or an alert
        # can name a status before it first happens.
        counts = {(str(status), str(trigger)): 0 for status in RunStatus for trigger in Trigger}
        for status, trigger, count, timed, total_ms, prompt_tokens, completion_tokens, usd, stopped, *buckets in rows:
            counts[status, trigger] = count
            stops_by_trigger[trigger] = stops_by_trigger.get(trigger, 0) + stopped
            if timed:
                cumulative = [(str(bound), int(n or 0)) for bound, n in zip(DURATION_BUCKETS, buckets)]
                duration.add_metric([status, trigger], cumulative + [("+Inf", timed)], total_ms / 1000)
            prompt_by_trigger[trigger] = prompt_by_trigger.get(trigger, 0) + int(prompt_tokens)
            completion_by_trigger[trigger] = completion_by_trigger.get(trigger, 0) + int(completion_tokens)
            cost_by_trigger[trigger] = cost_by_trigger.get(trigger, 0.0) + float(usd)
        for (status, trigger), count in counts.items():
            runs.add_metric([status, trigger], count)
        for trigger, value in prompt_by_trigger.items():
            tokens.add_metric(["prompt", trigger], value)
        for trigger, value in completion_by_trigger.items():
            tokens.add_metric(["completion", trigger], value)
        for trigger, value in cost_by_trigger.items():
            cost.add_metric([trigger], value)
        for trigger, value in stops_by_trigger.items():
            stops.add_metric([trigger], value)
        return [runs, duration, tokens, cost, stops]

    def _enabled_tasks(self):
        count = db.session.execute(db.select(func.count()).select_from(Task).where(Task.enabled)).scalar_one()
        gauge = GaugeMetricFamily("promptbeat_enabled_tasks", "Tasks that are enabled (scheduled).")
        gauge.add_metric([], count)
        return gauge

    def _delivery_attempts(self):
        counts = ledger.attempts_by_status()
        # Every kind and status has its series from the start, so an alert on failed deliveries can be written
        # before the first one.
        attempts = CounterMetricFamily(
            "promptbeat_delivery_attempts",
            "Delivery attempts to channels, by channel kind and outcome (failed: no more attempts will be made).",
            labels=["kind", "status"])
        for kind in ChannelKind:
            for status in DeliveryStatus:
                attempts.add_metric([str(kind), str(status)], counts.get((str(kind), str(status)), 0))
        return attempts

    def _queue_metrics(self):
        celery = self.app.extensions["celery"]
        queue = celery.conf.task_default_queue
        up = GaugeMetricFamily("promptbeat_redis_up", "1 when Redis answered this scrape.")
        try:
            client = redis_client(self.app)
            with client.pipeline(transaction=False) as pipe:
                pipe.llen(queue)
                pipe.hlen("unacked")
                waiting, unacked = pipe.execute()
        except Exception as exc:
            logger.warning("metrics: could not read the queue from Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("promptbeat_queue_depth", "Runs waiting in the Celery queue for a worker.",
                                  labels=["queue"])
        depth.add_metric([queue], waiting)
        yield depth
        taken = GaugeMetricFamily("promptbeat_queue_unacked",
                                  "Runs taken by a worker and not yet acknowledged (running or prefetched).")
        taken.add_metric([], unacked)
        yield taken
