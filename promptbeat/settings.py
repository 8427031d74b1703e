"""Typed settings read once from the environment, with defaults for local use."""
import json
import os
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(RuntimeError):
    """Raised at start-up when the environment is missing or malformed."""


def _str(environ, name, default=None):
    value = environ.get(name, "").strip()
    return value or default


def _int(environ, name, default):
    raw = _str(environ, name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _float(environ, name, default):
    raw = _str(environ, name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _limit(environ, name, kind):
    """A budget: a finite number at or above 0, or None when unset."""
    raw = _str(environ, name)
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not 0 <= value < float("inf"):
        word = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {word} of at least 0, or empty for no limit, got {raw!r}")
    return value


def _bool(environ, name, default):
    raw = _str(environ, name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Every knob promptbeat reads from the environment, in one place."""

    secret_key: str
    database_url: str = "postgresql://127.0.0.1:5432/promptbeat"
    redis_url: str = "redis://127.0.0.1:6379/0"
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    default_model: str = "gpt-4o-mini"
    min_interval_seconds: int = 60
    max_enabled_tasks: int = 10_000
    # Across all workers; 0 means no cap. As many as one worker container runs at once by default.
    max_concurrent_llm_calls: int = 300
    # Runs due in the same minute start spread over this many seconds, each task at its own stable offset (0: off).
    spread_bursts_seconds: int = 0
    # The completion tokens a rate limit counts up front for a task without max_tokens (promptbeat.ratelimits).
    estimated_completion_tokens: int = 500
    # A scheduled run this much later than its slot is recorded as a catch-up.
    misfire_grace_seconds: int = 15
    max_prompt_chars: int = 20_000
    # What rendering one prompt template may spend (promptbeat.runs.metered): steps, and seconds.
    template_max_steps: int = 1_000_000
    template_max_seconds: float = 2.0
    llm_timeout_seconds: float = 120.0
    reconcile_seconds: int = 30
    beat_max_loop_interval: int = 5
    beat_lock_timeout: int = 25
    redbeat_key_prefix: str = "promptbeat:"
    visibility_timeout: int = 3600
    # Only a cold shutdown (SIGQUIT) uses it; under gevent, Celery's soft shutdown fails once it runs out.
    worker_soft_shutdown_timeout: float = 0.0
    # The first admin's sign-in file (promptbeat.accounts.sign_in_file); `dev.py start` sets it.
    admin_credentials_file: str | None = None
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    max_attempts: int = 4
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    max_run_seconds: int = 900
    # Liveness (promptbeat.runs.liveness, promptbeat.runs.recovery): every worker process records a heartbeat this
    # often; one silent for runner_timeout_seconds is dead, and the sweep (every sweep_seconds) starts its
    # runs again. A worker that dies is noticed within runner_timeout_seconds + sweep_seconds.
    heartbeat_seconds: float = 5.0
    runner_timeout_seconds: int = 20
    sweep_seconds: int = 10
    lost_grace_seconds: int = 30
    # Batch mode (promptbeat.batches): how often beat submits collected runs and polls batches, how many
    # runs go in one batch and how many batches one tick sends or reads, the provider's discount on batch
    # prices, and how long past the provider's 24 h window a submitted run may wait before it is lost.
    batch_seconds: int = 60
    batch_max_runs: int = 1000
    batches_per_tick: int = 20
    batch_discount: float = 0.5
    batch_grace_seconds: int = 3600
    fernet_keys: tuple = field(default=(), repr=False)
    prices: dict = field(default_factory=dict)
    webhook_allow_private: bool = False
    # Local model servers (Ollama, vLLM) live at private addresses, so connections may use them unless forbidden.
    connection_allow_private: bool = True
    # Deliveries to channels (promptbeat.notify): attempts per run and channel, the first retry's wait
    # (doubled at each further one), and seconds per webhook attempt.
    delivery_attempts: int = 5
    delivery_retry_seconds: float = 30.0
    webhook_timeout_seconds: float = 10.0
    # Email channels send through this SMTP server; without a host, email deliveries fail with a message.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_from: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = True
    db_pool_size: int = 20
    https: bool = False
    proxy_hops: int = 0
    signin_attempts: int = 10
    signin_window_seconds: int = 300
    # The worker role's replacements of library internals (docs/performance.md); each can be switched off.
    fast_broker: bool = True
    fast_gevent_poll: bool = True
    fast_llm_calls: bool = True
    # Global budgets (promptbeat.runs.budget): spend of all tasks together per day and month in
    # budget_timezone; None means no limit.
    budget_usd_day: float | None = None
    budget_usd_month: float | None = None
    budget_tokens_day: int | None = None
    budget_tokens_month: int | None = None
    budget_timezone: str = "UTC"
    # Flower's address as a browser reaches it; each run on a task's page then links to its entry there.
    flower_url: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if not self.database_url.startswith("postgresql"):
            raise ConfigError("DATABASE_URL must be a PostgreSQL URL, like postgresql://user@host:5432/promptbeat.")
        if self.retry_max_seconds >= self.max_run_seconds:
            raise ConfigError("PROMPTBEAT_RETRY_MAX_SECONDS must be below PROMPTBEAT_MAX_RUN_SECONDS.")
        # A run's message stays unacknowledged until the run ends, at the latest when the sweep marks it
        # lost; a visibility timeout shorter than that hands a run still in progress to a second worker.
        # (Backoffs stay below PROMPTBEAT_MAX_RUN_SECONDS, so they stay below the timeout too.)
        run_bound = self.max_run_seconds + self.sweep_seconds + self.lost_grace_seconds
        if self.visibility_timeout <= run_bound:
            raise ConfigError(
                f"PROMPTBEAT_VISIBILITY_TIMEOUT ({self.visibility_timeout} s) must be greater than "
                "PROMPTBEAT_MAX_RUN_SECONDS + PROMPTBEAT_SWEEP_SECONDS + PROMPTBEAT_LOST_GRACE_SECONDS "
                f"({self.max_run_seconds} + {self.sweep_seconds} + {self.lost_grace_seconds} = {run_bound} s), "
                "or a run still in progress would be handed to a second worker."
            )
        if self.batch_seconds < 1 or self.batch_max_runs < 1 or self.batches_per_tick < 1:
            raise ConfigError("PROMPTBEAT_BATCH_SECONDS, PROMPTBEAT_BATCH_MAX_RUNS and PROMPTBEAT_BATCHES_PER_TICK "
                              "must be at least 1.")
        if not 0 <= self.batch_discount <= 1 or self.batch_grace_seconds < 0:
            raise ConfigError("PROMPTBEAT_BATCH_DISCOUNT must be between 0 and 1, and PROMPTBEAT_BATCH_GRACE_SECONDS "
                              "at least 0.")
        if self.delivery_attempts < 1:
            raise ConfigError("PROMPTBEAT_DELIVERY_ATTEMPTS must be at least 1.")
        if not 0 <= self.spread_bursts_seconds <= 3600:
            raise ConfigError("PROMPTBEAT_SPREAD_BURSTS_SECONDS must be between 0 and 3600.")
        if self.estimated_completion_tokens < 1:
            raise ConfigError("PROMPTBEAT_ESTIMATED_COMPLETION_TOKENS must be at least 1.")
        if self.max_attempts < 1:
            raise ConfigError("PROMPTBEAT_MAX_ATTEMPTS must be at least 1.")
        try:
            ZoneInfo(self.budget_timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ConfigError("PROMPTBEAT_BUDGET_TIMEZONE must be an IANA zone name such as Europe/Berlin.") from None
        # Two heartbeats may be late (a busy process, a slow database) before a live worker is thought dead.
        if self.heartbeat_seconds <= 0 or self.runner_timeout_seconds < 3 * self.heartbeat_seconds:
            raise ConfigError("PROMPTBEAT_RUNNER_TIMEOUT_SECONDS must be at least three times "
                              "PROMPTBEAT_HEARTBEAT_SECONDS, which must be above 0.")

    @classmethod
    def from_environ(cls, environ=None):
        """Read settings; fail fast on a missing SECRET_KEY or a malformed number."""
        environ = os.environ if environ is None else environ
        secret_key = _str(environ, "SECRET_KEY")
        if not secret_key:
            raise ConfigError(
                "SECRET_KEY is not set. Set it to a long random string "
                "(`python3 dev.py start` generates one for local use)."
            )
        return cls(
            secret_key=secret_key,
            database_url=_str(environ, "DATABASE_URL", cls.database_url),
            redis_url=_str(environ, "REDIS_URL", cls.redis_url),
            openai_api_key=_str(environ, "OPENAI_API_KEY"),
            openai_base_url=_str(environ, "OPENAI_BASE_URL"),
            default_model=_str(environ, "PROMPTBEAT_DEFAULT_MODEL", cls.default_model),
            min_interval_seconds=_int(environ, "PROMPTBEAT_MIN_INTERVAL_SECONDS", cls.min_interval_seconds),
            max_enabled_tasks=_int(environ, "PROMPTBEAT_MAX_ENABLED_TASKS", cls.max_enabled_tasks),
            max_concurrent_llm_calls=_int(environ, "PROMPTBEAT_MAX_CONCURRENT_LLM_CALLS", cls.max_concurrent_llm_calls),
            spread_bursts_seconds=_int(environ, "PROMPTBEAT_SPREAD_BURSTS_SECONDS", cls.spread_bursts_seconds),
            estimated_completion_tokens=_int(environ, "PROMPTBEAT_ESTIMATED_COMPLETION_TOKENS",
                                             cls.estimated_completion_tokens),
            misfire_grace_seconds=_int(environ, "PROMPTBEAT_MISFIRE_GRACE_SECONDS", cls.misfire_grace_seconds),
            max_prompt_chars=_int(environ, "PROMPTBEAT_MAX_PROMPT_CHARS", cls.max_prompt_chars),
            template_max_steps=_int(environ, "PROMPTBEAT_TEMPLATE_MAX_STEPS", cls.template_max_steps),
            template_max_seconds=_float(environ, "PROMPTBEAT_TEMPLATE_MAX_SECONDS", cls.template_max_seconds),
            llm_timeout_seconds=_float(environ, "PROMPTBEAT_LLM_TIMEOUT", cls.llm_timeout_seconds),
            reconcile_seconds=_int(environ, "PROMPTBEAT_RECONCILE_SECONDS", cls.reconcile_seconds),
            beat_max_loop_interval=_int(environ, "PROMPTBEAT_BEAT_MAX_LOOP_INTERVAL", cls.beat_max_loop_interval),
            beat_lock_timeout=_int(environ, "PROMPTBEAT_BEAT_LOCK_TIMEOUT", cls.beat_lock_timeout),
            redbeat_key_prefix=_str(environ, "PROMPTBEAT_REDBEAT_PREFIX", cls.redbeat_key_prefix),
            visibility_timeout=_int(environ, "PROMPTBEAT_VISIBILITY_TIMEOUT", cls.visibility_timeout),
            worker_soft_shutdown_timeout=_float(
                environ, "PROMPTBEAT_WORKER_SOFT_SHUTDOWN_TIMEOUT", cls.worker_soft_shutdown_timeout
            ),
            admin_credentials_file=_str(environ, "PROMPTBEAT_ADMIN_CREDENTIALS_FILE"),
            metrics_enabled=_bool(environ, "PROMPTBEAT_METRICS", cls.metrics_enabled),
            metrics_token=_str(environ, "PROMPTBEAT_METRICS_TOKEN"),
            max_attempts=_int(environ, "PROMPTBEAT_MAX_ATTEMPTS", cls.max_attempts),
            retry_base_seconds=_float(environ, "PROMPTBEAT_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            retry_max_seconds=_float(environ, "PROMPTBEAT_RETRY_MAX_SECONDS", cls.retry_max_seconds),
            max_run_seconds=_int(environ, "PROMPTBEAT_MAX_RUN_SECONDS", cls.max_run_seconds),
            heartbeat_seconds=_float(environ, "PROMPTBEAT_HEARTBEAT_SECONDS", cls.heartbeat_seconds),
            runner_timeout_seconds=_int(environ, "PROMPTBEAT_RUNNER_TIMEOUT_SECONDS", cls.runner_timeout_seconds),
            sweep_seconds=_int(environ, "PROMPTBEAT_SWEEP_SECONDS", cls.sweep_seconds),
            lost_grace_seconds=_int(environ, "PROMPTBEAT_LOST_GRACE_SECONDS", cls.lost_grace_seconds),
            batch_seconds=_int(environ, "PROMPTBEAT_BATCH_SECONDS", cls.batch_seconds),
            batch_max_runs=_int(environ, "PROMPTBEAT_BATCH_MAX_RUNS", cls.batch_max_runs),
            batches_per_tick=_int(environ, "PROMPTBEAT_BATCHES_PER_TICK", cls.batches_per_tick),
            batch_discount=_float(environ, "PROMPTBEAT_BATCH_DISCOUNT", cls.batch_discount),
            batch_grace_seconds=_int(environ, "PROMPTBEAT_BATCH_GRACE_SECONDS", cls.batch_grace_seconds),
            fernet_keys=tuple(k.strip() for k in (_str(environ, "PROMPTBEAT_FERNET_KEYS") or "").split(",")
                              if k.strip()),
            prices=_prices(environ),
            webhook_allow_private=_bool(environ, "PROMPTBEAT_WEBHOOK_ALLOW_PRIVATE", cls.webhook_allow_private),
            connection_allow_private=_bool(environ, "PROMPTBEAT_CONNECTION_ALLOW_PRIVATE",
                                           cls.connection_allow_private),
            delivery_attempts=_int(environ, "PROMPTBEAT_DELIVERY_ATTEMPTS", cls.delivery_attempts),
            delivery_retry_seconds=_float(environ, "PROMPTBEAT_DELIVERY_RETRY_SECONDS", cls.delivery_retry_seconds),
            webhook_timeout_seconds=_float(environ, "PROMPTBEAT_WEBHOOK_TIMEOUT", cls.webhook_timeout_seconds),
            smtp_host=_str(environ, "PROMPTBEAT_SMTP_HOST"),
            smtp_port=_int(environ, "PROMPTBEAT_SMTP_PORT", cls.smtp_port),
            smtp_from=_str(environ, "PROMPTBEAT_SMTP_FROM"),
            smtp_username=_str(environ, "PROMPTBEAT_SMTP_USERNAME"),
            smtp_password=_str(environ, "PROMPTBEAT_SMTP_PASSWORD"),
            smtp_starttls=_bool(environ, "PROMPTBEAT_SMTP_STARTTLS", cls.smtp_starttls),
            db_pool_size=_int(environ, "PROMPTBEAT_DB_POOL_SIZE", cls.db_pool_size),
            https=_bool(environ, "PROMPTBEAT_HTTPS", cls.https),
            proxy_hops=_int(environ, "PROMPTBEAT_PROXY_HOPS", cls.proxy_hops),
            signin_attempts=_int(environ, "PROMPTBEAT_SIGNIN_ATTEMPTS", cls.signin_attempts),
            signin_window_seconds=_int(environ, "PROMPTBEAT_SIGNIN_WINDOW_SECONDS", cls.signin_window_seconds),
            fast_broker=_bool(environ, "PROMPTBEAT_FAST_BROKER", cls.fast_broker),
            fast_gevent_poll=_bool(environ, "PROMPTBEAT_FAST_GEVENT_POLL", cls.fast_gevent_poll),
            fast_llm_calls=_bool(environ, "PROMPTBEAT_FAST_LLM_CALLS", cls.fast_llm_calls),
            flower_url=_flower_url(environ),
            budget_usd_day=_limit(environ, "PROMPTBEAT_BUDGET_USD_DAY", float),
            budget_usd_month=_limit(environ, "PROMPTBEAT_BUDGET_USD_MONTH", float),
            budget_tokens_day=_limit(environ, "PROMPTBEAT_BUDGET_TOKENS_DAY", int),
            budget_tokens_month=_limit(environ, "PROMPTBEAT_BUDGET_TOKENS_MONTH", int),
            budget_timezone=_str(environ, "PROMPTBEAT_BUDGET_TIMEZONE", cls.budget_timezone),
        )

    def flask_config(self):
        """The Flask config mapping, Celery and RedBeat knobs included."""
        return {
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": engine_options(self.database_url, self.db_pool_size),
            "PROMPTBEAT": self,
            "CELERY": celery_config(self),
        }


def normalize_database_url(url):
    """Pin plain PostgreSQL URLs to psycopg2, the driver promptbeat ships with."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


# USD per million tokens (input, output); PROMPTBEAT_PRICES adds to or overrides these.
DEFAULT_PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}


def _prices(environ):
    raw = _str(environ, "PROMPTBEAT_PRICES")
    prices = dict(DEFAULT_PRICES)
    if raw is None:
        return prices
    try:
        extra = json.loads(raw)
        for model, pair in extra.items():
            prompt_price, completion_price = (float(x) for x in pair)
            prices[str(model)] = (prompt_price, completion_price)
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(
            'PROMPTBEAT_PRICES must be JSON like {"model": [input_usd_per_1M, output_usd_per_1M]}'
        ) from None
    return prices


def _flower_url(environ):
    url = _str(environ, "PROMPTBEAT_FLOWER_URL")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"PROMPTBEAT_FLOWER_URL must start with http:// or https://, got {url!r}")
    return url


def engine_options(database_url, pool_size=20, autocommit=False):
    """Engine options: a sized pool, and optionally autocommit.

    autocommit makes every statement its own transaction: for the worker, whose writes each stand
    alone (claim a run, record its result, count it), it spares each write a BEGIN and a COMMIT.
    """
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    # A run holds a connection only while it writes, never during the model call, so a
    # small pool serves hundreds of calls in flight; waiters queue for pool_timeout. Connections
    # are checked before reuse only after sitting idle (promptbeat.extensions.ping_when_idle).
    # No overflow: the pool keeps every connection it opens. Overflow connections are closed when
    # handed back, so a worker under steady load opened and closed one every few runs.
    return {"pool_recycle": 1800, "pool_size": pool_size,
            "max_overflow": 0, "pool_timeout": 60, **options}


def celery_config(settings):
    """Every Celery and RedBeat setting promptbeat relies on, set explicitly."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        # Longer than the longest run, so an unacked message is not redelivered mid-run;
        # a SIGKILLed worker's messages come back to the queue after this many seconds.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Workers sweep for such messages every few seconds relative to the timeout, instead of kombu's
            # default of about every 100 s, so a short timeout really means a short wait.
            "unacked_restore_interval": max(1, min(60, settings.visibility_timeout // 5)),
            "unacked_restore_throttle": 1,
        },
        "task_ignore_result": True,
        # With no result backend, Celery's stand-in keeps no state; marked shareable, it is made once
        # instead of once per thread, and under gevent once per greenlet, which is once per run.
        "result_backend_thread_safe": True,
        # No result backend, so no backend_cleanup entry in beat either.
        "result_expires": None,
        "task_default_queue": "promptbeat",
        "task_acks_late": True,
        # A run that failed raises once its failure is recorded (promptbeat.runs.tasks.RunFailed), so Flower shows
        # FAILURE; its message is acknowledged, never redelivered. Only a lost worker requeues a message.
        "task_acks_on_failure": True,
        "task_reject_on_worker_lost": True,
        # LLM calls are long; a worker should not hoard messages another worker could run.
        "worker_prefetch_multiplier": 1,
        # On a cold shutdown (SIGQUIT) under prefork, running tasks get this long to finish; the rest are
        # requeued, not lost (acks_late). Compose and dev.py stop workers warmly (SIGTERM) instead.
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_timeout,
        "worker_send_task_events": True,
        # No task-sent events: Flower merges a late one over the worker's task-received event, so the
        # run's name (its shadow, "promptbeat task N") could turn back into the Celery task's name.
        "task_send_sent_event": False,
        "timezone": "UTC",
        "enable_utc": True,
        "redbeat_redis_url": settings.redis_url,
        "redbeat_redis_options": {},
        "redbeat_key_prefix": settings.redbeat_key_prefix,
        # A fixed job: start again, or mark lost, the runs whose worker died or whose message was lost
        # (promptbeat.runs.recovery.sweep).
        "beat_schedule": {
            "promptbeat-sweep-lost-runs": {
                "task": "promptbeat.sweep_lost_runs",
                "schedule": float(settings.sweep_seconds),
                "options": {"expires": float(settings.sweep_seconds)},
            },
            # Batch mode (promptbeat.batches): send the runs collected since, then read batches that ended.
            "promptbeat-submit-batches": {
                "task": "promptbeat.submit_batches",
                "schedule": float(settings.batch_seconds),
                "options": {"expires": float(settings.batch_seconds)},
            },
            "promptbeat-poll-batches": {
                "task": "promptbeat.poll_batches",
                "schedule": float(settings.batch_seconds),
                "options": {"expires": float(settings.batch_seconds)},
            },
        },
        # A new entry is picked up within a few seconds, and a standby beat takes over
        # within lock timeout + loop interval (about 30 s) instead of RedBeat's 25 minutes.
        "beat_max_loop_interval": settings.beat_max_loop_interval,
        "redbeat_lock_timeout": settings.beat_lock_timeout,
    }
