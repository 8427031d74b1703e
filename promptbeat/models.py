"""Database models: users and their API tokens, tasks, and their executions."""
import enum
import hashlib
import secrets
from datetime import date, datetime, timezone
from decimal import Decimal

from sqlalchemy import (JSON, BigInteger, Column, Computed, Date, DateTime, ForeignKey, Index, Integer, Numeric, String,
                        Text, TypeDecorator, UniqueConstraint)
from sqlalchemy import false as sa_false
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates
from werkzeug.security import check_password_hash, generate_password_hash

from promptbeat.extensions import db
from promptbeat.runs.search_vector import SEARCH_VECTOR_SQL
from promptbeat.runs.states import RunStatus


def utcnow():
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC and returns aware UTC, so every value the code sees is timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


class ScheduleType(enum.StrEnum):
    INTERVAL = "interval"
    FIXED_TIME = "fixed_time"
    CRONTAB = "crontab"
    ONCE = "once"


# Checked for every dashboard row; iterating an enum each time costs more than the check.
SCHEDULE_TYPES = frozenset(ScheduleType)


class OverlapPolicy(enum.StrEnum):
    SKIP = "skip"
    ALLOW = "allow"


class Role(enum.StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


class Trigger(enum.StrEnum):
    IMMEDIATE = "immediate"
    SCHEDULED = "scheduled"
    MANUAL = "manual"


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.ADMIN, server_default=Role.ADMIN)
    # A locale code ("en", "zh_Hans"), or None to follow the browser's Accept-Language.
    language: Mapped[str | None] = mapped_column(String(16))
    # An IANA zone the pages show times in, or None until the browser reports one (UTC meanwhile).
    timezone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of every session's user id: raising it ends the user's sessions everywhere, server-side.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # A disabled user cannot sign in, and their sessions and API tokens are refused.
    disabled: Mapped[bool] = mapped_column(default=False, server_default=sa_false())

    tokens: Mapped[list["ApiToken"]] = relationship(back_populates="user", cascade="all, delete-orphan")

    # Flask-Login protocol.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self):
        """Flask-Login refuses to sign in an inactive user."""
        return not self.disabled

    def get_id(self):
        """The session's user id, "<id>:<session version>": a session of an older version no longer signs in."""
        return f"{self.id}:{self.session_version or 0}"

    def end_sessions(self):
        """Sign the user out of every browser."""
        self.session_version = (self.session_version or 0) + 1

    @validates("role", "password_hash", "disabled")
    def _credentials_changed(self, key, value):
        # Sessions carry the rights and the password they were opened with; when those change, they end.
        if getattr(self, key) is not None and value != getattr(self, key):
            self.end_sessions()
        return value

    @property
    def is_admin(self):
        return self.role == Role.ADMIN

    def set_password(self, password):
        self.password_hash = generate_password_hash(password)

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)


def hash_token(token):
    """The stored form of an API token: its SHA-256, so a database leak reveals no token."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="default")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")

    @classmethod
    def issue(cls, user, name="default"):
        """Create a token for user; returns (row, plaintext). The plaintext is never stored."""
        plaintext = "pb_" + secrets.token_urlsafe(32)
        return cls(user=user, name=name, token_hash=hash_token(plaintext)), plaintext


class ChannelKind(enum.StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


class NotifyOn(enum.StrEnum):
    """When a task's channels are told about a run (promptbeat.notify.rules)."""

    EVERY = "every"
    CHANGE = "change"
    FAILURE = "failure"
    RECOVERY = "recovery"
    AUTO_PAUSE = "auto_pause"
    # A run was stopped by a budget before it called the model (promptbeat.runs.budget).
    BUDGET = "budget"


class DeliveryStatus(enum.StrEnum):
    """The outcome of one delivery attempt: delivered, failed with another attempt to come, or failed for good."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"


class Connection(db.Model):
    """A named OpenAI-compatible endpoint; its API key is stored only encrypted (promptbeat.llm.crypto)."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    base_url: Mapped[str | None] = mapped_column(String(2000))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    default_model: Mapped[str | None] = mapped_column(String(200))
    extra_headers: Mapped[dict | None] = mapped_column(JSON)
    # Models tried in turn when a call through this connection fails in a way another model may not
    # (promptbeat.runs.fallbacks): [{"model", "connection_id"}], for tasks that list none of their own.
    fallbacks: Mapped[list | None] = mapped_column(JSON)
    # The provider's limits on this key, enforced across all workers (promptbeat.ratelimits); None: no limit.
    rpm_limit: Mapped[int | None]
    tpm_limit: Mapped[int | None]
    max_concurrency: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def has_api_key(self):
        return bool(self.api_key_encrypted)


class Channel(db.Model):
    """Where a task's runs are delivered: a webhook (JSON or Slack) or email; its secret is stored only encrypted."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(2000))
    # The Standard Webhooks signing secret ("whsec_..."), Fernet-encrypted (promptbeat.llm.crypto).
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # Email: the addresses a run is sent to (the API's "to").
    recipients: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# Which channels a task delivers to; deleting either side removes the pairing.
task_channels = db.Table(
    "task_channels",
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("channel_id", Integer, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Task(db.Model):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_name_id", "name", "id"),
        # The dashboard's search is a substring match (ILIKE '%words%'): a trigram index serves it.
        Index("ix_tasks_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    temperature: Mapped[float] = mapped_column(default=0.7)
    max_tokens: Mapped[int | None]
    schedule_type: Mapped[str] = mapped_column(String(16))
    interval_seconds: Mapped[int | None]
    fixed_time: Mapped[str | None] = mapped_column(String(5))
    cron: Mapped[str | None] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # When the schedule last fired or was (re)started: interval phase and restores count from here.
    anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # One-off schedule: the moment it runs.
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bounds: no slot before start_at or after end_at, and at most max_runs scheduled runs.
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_runs: Mapped[int | None]
    run_count: Mapped[int] = mapped_column(default=0)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    overlap_policy: Mapped[str] = mapped_column(String(8), default=OverlapPolicy.SKIP)
    # How late a missed slot may still run after beat was down; None means the default.
    catchup_seconds: Mapped[int | None]
    # Why the task is paused (a user's note, or the auto-pause reason).
    pause_note: Mapped[str | None] = mapped_column(Text)
    auto_pause_after: Mapped[int | None]
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"))
    # None means the setting's default (PROMPTBEAT_MAX_ATTEMPTS, _LLM_TIMEOUT, _MAX_RUN_SECONDS).
    max_attempts: Mapped[int | None]
    request_timeout_seconds: Mapped[float | None]
    max_run_seconds: Mapped[int | None]
    # When its channels are told about a run: a list of NotifyOn values.
    notify_on: Mapped[list] = mapped_column(JSON, default=lambda: [NotifyOn.EVERY], server_default='["every"]')
    # A JSON Schema the answer must conform to (promptbeat.outputs); None for a plain-text answer.
    output_schema: Mapped[dict | None] = mapped_column(JSON)
    # Regular expressions: lines of the answer that match one are left out of the change comparison.
    ignore_patterns: Mapped[list | None] = mapped_column(JSON)
    # Models tried in turn after the task's own (promptbeat.runs.fallbacks): [{"model", "connection_id"}],
    # a connection_id of None meaning the task's connection; None to use its connection's fallbacks.
    fallbacks: Mapped[list | None] = mapped_column(JSON)
    # Batch mode: runs are collected and sent through the provider's Batch API (promptbeat.batches).
    batch: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    # Spend limits per day and month in the task's zone (promptbeat.runs.budget); None: no limit.
    budget_usd_day: Mapped[float | None]
    budget_usd_month: Mapped[float | None]
    budget_tokens_day: Mapped[int | None] = mapped_column(BigInteger)
    budget_tokens_month: Mapped[int | None] = mapped_column(BigInteger)
    # Pause the task when a budget stops one of its runs.
    pause_on_budget: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    # A scheduled run waits a random 0..jitter_seconds after its slot (as a waiting run).
    jitter_seconds: Mapped[int] = mapped_column(default=0, server_default="0")
    # An interval task's immediate run (on create, enable or schedule change) waits this long; 0: at once.
    first_run_delay_seconds: Mapped[int] = mapped_column(default=0, server_default="0")

    connection: Mapped[Connection | None] = relationship()
    channels: Mapped[list[Channel]] = relationship(secondary=task_channels, order_by=Channel.id,
                                                   passive_deletes=True)
    executions: Mapped[list["Execution"]] = relationship(
        back_populates="task", cascade="all, delete-orphan", passive_deletes=True
    )


class Execution(db.Model):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_task_id_id", "task_id", "id"),
        # /metrics counts runs by status and trigger at every scrape.
        Index("ix_executions_status_trigger", "status", "trigger"),
        # One execution per scheduled slot, however often the slot is dispatched.
        UniqueConstraint("task_id", "slot", name="uq_executions_task_id_slot"),
        Index("ix_executions_status_deadline_at", "status", "deadline_at"),
        # The runs page's full-text search over outputs (promptbeat.runs.search).
        Index("ix_executions_output_search", "output_search", postgresql_using="gin"),
        # The runs page's date range.
        Index("ix_executions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED)
    trigger: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None]
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    total_tokens: Mapped[int | None]
    # The Celery node (name@host) that ran it, so a run can be traced to a worker container.
    worker: Mapped[str | None] = mapped_column(String(255))
    # The nominal fire time a scheduled run stands for; None for manual and immediate runs.
    slot: Mapped[datetime | None] = mapped_column(UTCDateTime)
    catch_up: Mapped[bool] = mapped_column(default=False)
    cost_usd: Mapped[float | None]
    # The prompt as sent, after its variables were rendered.
    prompt: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(String(64))
    # One entry per model call: {"attempt", "at", "model", "connection_id", "ms", "error_class", "error", "wait_s"}.
    attempts: Mapped[list | None] = mapped_column(JSON)
    # The model and connection (None: the default endpoint) that gave the answer, a fallback's after a failure.
    answered_model: Mapped[str | None] = mapped_column(String(200))
    answered_connection_id: Mapped[int | None]
    # Past this moment a run still marked running is dead: the sweeper marks it lost.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The run this one retries (promptbeat.runs.store.create_retry); None for every other run.
    retry_of: Mapped[int | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL", name="fk_executions_retry_of_executions"))
    # The claim that holds a running run: "<runner id>/<claim number>" (promptbeat.runs.liveness). Only the
    # holder of the claim may finish the run, so a worker wrongly thought dead cannot write over a re-run.
    runner: Mapped[str | None] = mapped_column(String(255))
    # How often the run was started again after its worker died or its message was lost (promptbeat.runs.recovery).
    recoveries: Mapped[int] = mapped_column(server_default="0")
    # The answer parsed as JSON and validated against the task's output_schema, when it has one.
    parsed_output: Mapped[dict | list | None] = mapped_column(JSON)
    # Compared with the task's previous successful run: True or False, None for the first one.
    changed: Mapped[bool | None]
    # A unified diff (text) or a list of changed paths (structured output) against that previous run.
    diff: Mapped[str | None] = mapped_column(Text)
    # A batch-mode run (status submitted): the provider's batch id once sent (None while it waits to be),
    # and the chat request its line of the batch file carries.
    batch_id: Mapped[str | None] = mapped_column(String(100))
    batch_request: Mapped[dict | None] = mapped_column(JSON, deferred=True)
    # A waiting run: why (promptbeat.ratelimits.limits.WaitReason) and the moment it is to run.
    wait_reason: Mapped[str | None] = mapped_column(String(32))
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A batch-mode run's budget hold (promptbeat.runs.budget.to_record), charged when it was collected and
    # settled when its result arrives, in another process hours later.
    budget_hold: Mapped[dict | None] = mapped_column(JSON, deferred=True)
    # The output's words for full-text search, kept by PostgreSQL from the output (promptbeat.runs.search);
    # stored rather than an expression index so that checking a phrase match reads it instead of
    # re-parsing each candidate output. Never loaded with the row.
    output_search = mapped_column(TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True), deferred=True)

    task: Mapped[Task] = relationship(back_populates="executions")


class ProviderBatch(db.Model):
    """A batch sent through a provider's Batch API, polled by beat's fixed job until it ends (promptbeat.batches)."""

    __tablename__ = "provider_batches"
    __table_args__ = (Index("ix_provider_batches_status_polled_at", "status", "polled_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The provider's id (batch_...): the executions it holds name it in batch_id.
    provider_id: Mapped[str] = mapped_column(String(100), unique=True)
    # The connection it was sent through; None for the default endpoint (OPENAI_BASE_URL). No foreign key:
    # a deleted connection must not turn into the default endpoint.
    connection_id: Mapped[int | None]
    model: Mapped[str] = mapped_column(String(200))
    # in_progress until it ends; then the provider's final status, or gone (404).
    status: Mapped[str] = mapped_column(String(16))
    run_count: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)


class Delivery(db.Model):
    """One attempt to deliver a run to a channel (promptbeat.notify.ledger): the ledger keeps every one."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_execution_id_id", "execution_id", "id"),
        # /metrics counts the latest attempt of every run and channel by status.
        Index("ix_deliveries_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    # NULL once the channel is deleted; its name stays, so the history still says where it went.
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"), index=True)
    channel_name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    # The HTTP status code, or the SMTP reply code.
    code: Mapped[int | None]
    # The receiver's or SMTP server's reply, or the error, cut short.
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BudgetPeriod(enum.StrEnum):
    DAY = "day"
    MONTH = "month"


# The scope of the global budgets in the spend ledger: no task has id 0.
GLOBAL_SCOPE = 0


class Spend(db.Model):
    """What one scope (a task, or GLOBAL_SCOPE) spent in one day or month: the budget ledger (promptbeat.runs.budget).

    A run charges its estimate before its call and replaces it with its usage when it finishes, so the
    check before a call reads one row per budget instead of summing executions.
    """

    __tablename__ = "spend"

    # A task's id, or GLOBAL_SCOPE; no foreign key, so the global rows need no task. A task's rows go with it
    # (promptbeat.runs.budget.forget).
    scope: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    # The local date the day or month starts on, in the task's zone (or PROMPTBEAT_BUDGET_TIMEZONE).
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    usd: Mapped[Decimal] = mapped_column(Numeric(20, 8), default=0, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Runner(db.Model):
    """A worker process that runs tasks, and when it last proved it is alive (promptbeat.runs.liveness)."""

    __tablename__ = "runners"

    # "<Celery hostname or host name>:<pid>:<random>", unique across restarts and pid reuse.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


def render_migration_type(type_, obj, autogen_context):
    """Let autogenerate write UTCDateTime as a plain DateTime, so migrations import nothing of ours."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False
