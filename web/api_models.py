"""The JSON API's request and response bodies, declared once: validation and the OpenAPI document derive from them."""
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from promptbeat.models import ChannelKind, DeliveryStatus, NotifyOn, OverlapPolicy, ScheduleType, Trigger
from promptbeat.ratelimits.limits import WaitReason
from promptbeat.runs import search
from promptbeat.runs.states import RunStatus

# Ids beyond the columns' range cannot exist; the routes refuse them before asking the database.
MAX_ID = 2**31 - 1
MAX_PAGE = 500
MAX_DAYS = 366

# PostgreSQL cannot store NUL in text, so no API text may carry one.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
# JSON has no enum type: a member arrives as its string, which strict mode would refuse.
ScheduleKind = Annotated[ScheduleType, Field(strict=False)]
Overlap = Annotated[OverlapPolicy, Field(strict=False)]
Kind = Annotated[ChannelKind, Field(strict=False)]
Rule = Annotated[NotifyOn, Field(strict=False)]
# Documented as date-time so that generated clients and fuzzers send real moments; an ISO 8601 time
# without an offset (read in the task's zone) is accepted too.
Moment = Annotated[Text, Field(description="ISO 8601; without an offset it is read in the task's time zone.",
                                examples=["2030-01-31T09:00", "2030-01-31T09:00+01:00"],
                                json_schema_extra={"format": "date-time"})]


BUDGET_NOTE = ("The most the task may spend per {period} in its time zone, in {unit} (USD from the price table); "
               "a run that would pass it is skipped before it calls the model. null: no limit.")


class ApiInput(BaseModel):
    """A request body: JSON types exactly (no "5" for 5), and no fields beyond the declared ones."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class FallbackInput(ApiInput):
    """A model a run falls back to, on a connection (null: the task's own, or the default endpoint)."""

    model: Text = Field(max_length=200, examples=["gpt-4o-mini"])
    connection_id: int | None = None


FALLBACKS_DESCRIPTION = (
    "Models tried in turn when the task's model fails after its retries with a rate limit, exhausted quota, "
    "5xx, timeout, unreachable server or model not found (never on a 400 or an invalid answer). "
    "Each gets the task's attempts of its own; the run's time limit bounds them all.")


class ScheduleInput(ApiInput):
    """The schedule fields of a task. interval_* is for interval, time for fixed_time, cron for crontab,
    run_at for once."""

    model_config = ConfigDict(extra="ignore")

    schedule_type: ScheduleKind | None = None
    interval_minutes: int | None = None
    interval_seconds: int | None = None
    time: Text | None = Field(None, description="HH:MM in 24-hour time.", examples=["09:30"])
    cron: Text | None = Field(None, description="Five fields: minute hour day-of-month month day-of-week.",
                              examples=["0 9 * * 1-5"])
    timezone: Text | None = Field(None, description="An IANA name; UTC when left out.", examples=["Europe/Berlin"])
    run_at: Moment | None = None
    start_at: Moment | None = None
    end_at: Moment | None = None
    max_runs: int | None = None
    catchup_seconds: int | None = None


class TaskInput(ScheduleInput):
    """A task to create, or the fields to change (partial update). Bounds, cron syntax, zones and the
    schedule's horizon are checked after the types; a rejected body changes nothing."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = None
    prompt: Text | None = None
    system_prompt: Text | None = None
    model: Text | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    enabled: bool = True
    overlap_policy: Overlap | None = None
    auto_pause_after: int | None = None
    pause_note: Text | None = None
    connection_id: int | None = None
    max_attempts: int | None = None
    request_timeout_seconds: float | None = None
    max_run_seconds: int | None = None
    output_schema: dict[str, Any] | None = Field(
        None, description="A JSON Schema (draft 2020-12) the answer must conform to; null for plain text.",
        examples=[{"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}])
    ignore_patterns: list[Text] | None = Field(
        None, description="Regular expressions (RE2): matching lines (or, for structured output, field paths) "
                          "are left out of change detection.", examples=[["^Updated at "]])
    fallbacks: list[FallbackInput] | None = Field(
        None, max_length=5, description=FALLBACKS_DESCRIPTION + " Empty or null: the connection's fallbacks.")
    notify_on: list[Rule] | None = Field(
        None, max_length=len(NotifyOn),
        description="When the task's channels are told about a run: every, change (the answer differs from the previous successful one; a first run is not a change), "
                    "failure, recovery (the first success after a failure), auto_pause. Left out on create: every.")
    channel_ids: list[int] | None = Field(None, max_length=20, description="The channels runs are delivered to.")
    batch: bool = Field(
        False, description="Batch mode: runs are sent through the provider's Batch API at its discount and show "
                          "submitted, with their batch id, until the result arrives (within 24 h). Left out on create: "
                          "false.")
    budget_usd_day: float | None = Field(None, description=BUDGET_NOTE.format(unit="USD", period="day"))
    budget_usd_month: float | None = Field(None, description=BUDGET_NOTE.format(unit="USD", period="month"))
    budget_tokens_day: int | None = Field(None, description=BUDGET_NOTE.format(unit="tokens", period="day"))
    budget_tokens_month: int | None = Field(None, description=BUDGET_NOTE.format(unit="tokens", period="month"))
    pause_on_budget: bool | None = Field(None, description="Pause the task when a budget stops one of its runs; "
                                                           "false when left out on create.")
    jitter_seconds: int | None = Field(None, description="A scheduled run waits a random 0 to this many seconds "
                                                         "after its slot (0-3600; 0 when left out).")
    first_run_delay_seconds: int | None = Field(
        None, description="An interval task's immediate run (on create, enable or schedule change) waits this many "
                          "seconds (0-3600; 0, at once, when left out).")


class PauseInput(ApiInput):
    """An optional body for disable and pause."""

    note: Text | None = Field(None, description="Shown on the task while it is paused.")


class RunInput(ApiInput):
    """An optional body for run-now."""

    allow_overlap: bool = Field(False, description="Run even when a run is in progress and the policy is skip.")


class ConnectionInput(ApiInput):
    """A connection to create, or the fields to change. The key is write-only; an api_key of "" removes it."""

    name: Text | None = None
    base_url: Text | None = None
    api_key: Text | None = None
    default_model: Text | None = None
    extra_headers: dict[str, Text] | None = None
    fallbacks: list[FallbackInput] | None = Field(
        None, max_length=5, description=FALLBACKS_DESCRIPTION + " For tasks on this connection that list none.")
    rpm_limit: int | None = Field(None, description="Requests per minute, enforced across all workers; null: no limit.")
    tpm_limit: int | None = Field(None, description="Tokens per minute (prompt estimate plus max_tokens, corrected by "
                                                    "the answer's usage); null: no limit.")
    max_concurrency: int | None = Field(None, description="Calls in flight at once; null: no limit.")


class ChannelInput(ApiInput):
    """A channel to create, or the fields to change (partial). The secret is write-only: a webhook created
    without one gets a generated one (returned once), and "secret": "" makes a new one."""

    name: Text | None = None
    kind: Kind | None = Field(None, description="webhook, slack or email; cannot change once created.")
    url: Text | None = Field(None, description="Webhook and Slack: where runs are POSTed.",
                             examples=["https://hooks.example.com/promptbeat"])
    secret: Text | None = Field(None, description="Webhook: a Standard Webhooks secret (whsec_ and base64).")
    to: list[Text] | None = Field(None, max_length=20, description="Email: the recipients' addresses.",
                                  examples=[["ops@example.com"]])


class Query(BaseModel):
    """Query parameters: whole numbers in range; unknown parameters are refused, as unknown body fields are."""

    model_config = ConfigDict(extra="forbid")


class PageQuery(Query):
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="How many runs, newest first.")


class DaysQuery(Query):
    days: int = Field(30, ge=1, le=MAX_DAYS, description="How many days back from now.")


class RunsQuery(Query):
    """Filters of GET /api/runs; each is checked by promptbeat.runs.search, as on the runs page."""

    q: str | None = Field(None, description="Words to find in outputs (web search syntax: \"a phrase\", -word, "
                                            "or). Chinese and Japanese match as written, character by character.",
                          json_schema_extra={"maxLength": search.MAX_QUERY_CHARS})
    task_id: str | None = Field(None, description="Only this task's runs.", examples=["12"],
                                json_schema_extra={"pattern": "^[0-9]+$"})
    status: Annotated[RunStatus, Field(strict=False)] | None = Field(None, description="Only runs in this state.")
    changed: Annotated[search.Changed, Field(strict=False)] | None = Field(
        None, description="yes: the answer changed; no: it did not; first: a task's first successful run, with "
                          "nothing to compare with.")
    trigger: Annotated[Trigger, Field(strict=False)] | None = Field(None, description="Only runs started this way.")
    since: str | None = Field(None, description="Runs created at or after this moment (ISO 8601; UTC without an "
                                                "offset).", json_schema_extra={"format": "date-time"})
    until: str | None = Field(None, description="Runs created at or before this moment; a bare date includes "
                                                "the whole day.", json_schema_extra={"format": "date-time"})
    cursor: str | None = Field(None, description="next_cursor of the previous page; opaque.")
    format: Literal["json", "csv"] = Field("json", description="A CSV page has its next cursor in the "
                                                              "X-Next-Cursor header.")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="How many runs, newest first.")


class ApiOutput(BaseModel):
    """A response body: every key it has is declared, so a key added to an answer must be added here too."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(ApiOutput):
    """Every error: 400 malformed body or parameter, 401 no or bad token, 403 viewer, 404 unknown id,
    409 the run's state forbids it, 413 body too large, 422 invalid fields (a message per field)."""

    error: str = Field(examples=["validation_failed"])
    message: str
    fields: dict[str, str] | None = Field(None, description="For 422: a message per invalid field.")


class DeliverySummary(ApiOutput):
    """A run's delivery to one channel, from the ledger."""

    channel_id: int | None = Field(description="Null once the channel was deleted; the ledger keeps its name.")
    channel: str = Field(description="The channel's name when the attempts were made.")
    status: DeliveryStatus = Field(description="Of the latest attempt: delivered, retrying (another attempt is "
                                               "scheduled) or failed (no more attempts).")
    attempts: int
    code: int | None = Field(description="The HTTP status or SMTP reply code of the latest attempt, if any.")
    detail: str | None = Field(description="The receiver's or SMTP server's reply, or the error.")
    at: datetime


class FallbackOutput(ApiOutput):
    model: str
    connection_id: int | None


class ExecutionBrief(ApiOutput):
    """A run without its output, as shown in a task's last_run."""

    id: int
    task_id: int
    status: RunStatus
    trigger: Trigger
    model: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    slot: datetime | None = Field(description="The scheduled fire time this run stands for; null when manual.")
    catch_up: bool | None
    cost_usd: float | None
    error_class: str | None
    attempt_count: int
    retry_of: int | None = Field(description="The run this one retries; null unless it is a retry.")
    worker: str | None = Field(description="The Celery worker node (name@host) that ran it; null until claimed.")
    changed: bool | None = Field(description="Whether the answer differs from the task's previous successful run's; "
                                             "null for the first, and for runs that did not succeed.")
    answered_model: str | None = Field(description="The model that gave the answer: the task's, or a fallback's; "
                                                   "null when none answered.")
    answered_connection_id: int | None = Field(description="The connection that answered; null for the default "
                                                           "endpoint, and when none answered.")
    batch_id: str | None = Field(description="The provider's batch a batch-mode run was sent in; null until sent, "
                                             "and for other runs.")
    wait_reason: WaitReason | None = Field(
        None, description="Why a waiting run waits: rate_limit (its connection's limits), provider (the provider "
                          "asked to slow down), jitter, spread, first_run_delay; null unless waiting.")
    not_before: datetime | None = Field(None, description="When a waiting run is to run.")


class Execution(ExecutionBrief):
    """A run with its prompt, output and attempts."""

    output: str | None
    prompt: str | None = Field(description="The prompt as sent, after its variables were rendered.")
    attempts: list[dict[str, Any]] = Field(description="One entry per model call, with the model and connection_id "
                                                       "it asked.")
    parsed_output: Any = Field(description="The answer parsed as JSON and validated, for a task with an output_schema.")
    diff: str | None = Field(description="How the answer changed: a unified diff, or one line per added (+), removed "
                                         "(-) and changed (~) field path for structured output; null when unchanged.")
    deliveries: list[DeliverySummary] = Field(
        description="One entry per channel the run was delivered to: its latest attempt and how many there were.")


class RunRecord(ApiOutput):
    """A run as the runs list shows it: its task's name, its outcome and its output."""

    id: int
    task_id: int
    task_name: str
    status: RunStatus
    trigger: Trigger
    changed: bool | None = Field(description="Whether the answer differed from the task's previous successful "
                                             "run; null for the first one and for runs without an answer.")
    model: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    error_class: str | None
    error: str | None
    output: str | None
    parsed_output: Any = Field(description="The answer parsed as JSON, when the task has an output schema.")


class RunList(ApiOutput):
    runs: list[RunRecord]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page; null on the last page.")


class Spend(ApiOutput):
    """Spend in the current day and month: USD from the price table, and tokens; runs in flight count their estimate."""

    usd_day: float
    usd_month: float
    tokens_day: int
    tokens_month: int


class Budget(ApiOutput):
    """The global budgets (PROMPTBEAT_BUDGET_*; null: no limit) and what all tasks together spent against them."""

    timezone: str = Field(description="The zone whose days and months the global budgets count.")
    budget_usd_day: float | None
    budget_usd_month: float | None
    budget_tokens_day: int | None
    budget_tokens_month: int | None
    spend: Spend


class Task(ApiOutput):
    """A task as stored, with its schedule in words and its next runs."""

    id: int
    name: str
    prompt: str
    system_prompt: str | None
    model: str
    temperature: float
    max_tokens: int | None
    schedule_type: ScheduleType
    interval_seconds: int | None
    interval_minutes: float | None
    time: str | None
    cron: str | None
    timezone: str
    enabled: bool
    schedule_description: str
    next_run_at: datetime | None
    next_runs: list[datetime] = Field(description="The next (up to five) fire times; empty while paused or completed.")
    status: Literal["active", "paused", "completed"]
    pause_note: str | None
    run_at: datetime | None
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    run_count: int
    completed_at: datetime | None
    overlap_policy: OverlapPolicy
    catchup_seconds: int | None
    auto_pause_after: int | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime = Field(description="When the task was last changed; its runs do not change it.")
    last_run: ExecutionBrief | None = Field(description="The newest run; null before the first.")
    connection_id: int | None
    max_attempts: int | None
    request_timeout_seconds: float | None
    max_run_seconds: int | None
    output_schema: dict[str, Any] | None
    ignore_patterns: list[str] | None
    fallbacks: list[FallbackOutput]
    notify_on: list[NotifyOn]
    channel_ids: list[int]
    batch: bool
    budget_usd_day: float | None
    budget_usd_month: float | None
    budget_tokens_day: int | None
    budget_tokens_month: int | None
    pause_on_budget: bool
    spend: Spend = Field(description="What the task spent in its current day and month (in its time zone), "
                                     "counted while it has a budget.")
    jitter_seconds: int
    first_run_delay_seconds: int


class TaskList(ApiOutput):
    tasks: list[Task]


class ExecutionList(ApiOutput):
    executions: list[Execution]


class RunQueued(ApiOutput):
    execution: Execution


class SchedulePreview(ApiOutput):
    description: str
    next_runs: list[datetime]


class CallUsage(ApiOutput):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class TaskTrial(ApiOutput):
    """A test run's answer: nothing is saved. error says why there is no usable answer (the call failed, or
    the answer does not conform to the schema, in which case output still shows it)."""

    output: str | None
    parsed_output: Any = None
    error: str | None
    usage: CallUsage | None


class Usage(ApiOutput):
    runs: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float = Field(description="Estimated, from PROMPTBEAT_MODEL_PRICES.")


class DayUsage(Usage):
    day: date = Field(description="A UTC day.")


class TaskUsage(Usage):
    task_id: int


class UsageReport(ApiOutput):
    total: Usage
    per_day: list[DayUsage]
    per_task: list[TaskUsage]


class TaskUsageReport(ApiOutput):
    task_id: int
    total: Usage
    per_day: list[DayUsage]


class Connection(ApiOutput):
    """A named OpenAI-compatible endpoint: whether it has a key, never the key."""

    id: int
    name: str
    base_url: str | None
    default_model: str | None
    extra_headers: dict[str, str]
    has_api_key: bool
    fallbacks: list[FallbackOutput]
    rpm_limit: int | None
    tpm_limit: int | None
    max_concurrency: int | None


class ConnectionList(ApiOutput):
    connections: list[Connection]


class Channel(ApiOutput):
    """Where runs are delivered: whether it has a signing secret, never the secret (except once, on create)."""

    id: int
    name: str
    kind: ChannelKind
    url: str | None
    to: list[str]
    has_secret: bool
    secret: str | None = Field(None, description="Only in the answer that made it: the webhook signing secret.")


class ChannelList(ApiOutput):
    channels: list[Channel]


class Resent(ApiOutput):
    """The channels a run is being delivered to again."""

    execution_id: int
    channel_ids: list[int]


class ConnectionCheck(ApiOutput):
    """The outcome of listing the endpoint's models once."""

    ok: bool
    message: str
    error_class: str | None = None
    models: list[str] | None = Field(None, description="At most 50.")
    model_count: int | None = None
    missing_model: str | None = Field(None, description="The default model, when the endpoint does not list it.")
