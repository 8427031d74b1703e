"""What a run is asked to do, what its call needs, and what it came to: typed values, not dicts of strings."""
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from promptbeat.models import Trigger
from promptbeat.runs.states import RunStatus


@dataclass(frozen=True)
class RunRequest:
    """One message to run a task: which run (a queued one, a scheduled slot, or a new one) and how."""

    task_id: int
    trigger: Trigger = Trigger.SCHEDULED
    # A run already recorded as queued (Run now, an immediate run); None for a slot or a new run.
    execution_id: int | None = None
    # The nominal fire time a scheduled run stands for.
    slot: datetime | None = None
    catch_up: bool = False
    # Run now, even if a run of a task whose overlap policy is skip is running.
    allow_overlap: bool = False
    # The broker delivered the message again (its worker died or shut down mid-run).
    redelivered: bool = False
    # The Celery node that runs it.
    worker: str | None = None
    # A waiting run's message at its moment (promptbeat.runs.waiting): its jitter or spread is behind it,
    # and with reserved its place under its connection's rate limit too.
    delayed: bool = False
    reserved: bool = False
    # A waiting run's moment and reason: a message may come back before it (a countdown is capped below
    # the broker's visibility timeout), and then waits again for the rest.
    not_before: datetime | None = None
    wait_reason: str | None = None

    @classmethod
    def from_message(cls, task_id, trigger, execution_id=None, slot=None, catch_up=False, allow_overlap=False,
                     redelivered=False, worker=None, delayed=False, reserved=False, not_before=None,
                     wait_reason=None):
        """From a message's arguments, as JSON carries them."""
        return cls(task_id=task_id, trigger=Trigger(trigger), execution_id=execution_id, slot=parse_moment(slot),
                   catch_up=bool(catch_up), allow_overlap=bool(allow_overlap), redelivered=bool(redelivered),
                   worker=worker, delayed=bool(delayed), reserved=bool(reserved),
                   not_before=parse_moment(not_before), wait_reason=wait_reason)


@dataclass(frozen=True)
class Target:
    """One model a run may ask, and where: its own, or a fallback (promptbeat.runs.fallbacks)."""

    model: str
    # The connection the call goes through; None for the default endpoint (OPENAI_BASE_URL).
    connection_id: int | None
    endpoint: object = field(default=None, repr=False)
    # (error class, message) when its endpoint cannot be made: a run that comes to it fails with it.
    error: tuple[str, str] | None = None


@dataclass
class CallPlan:
    """Everything a run's model call needs, read from the database before its connection is released."""

    task_id: int
    task_name: str
    model: str
    system_prompt: str | None
    temperature: float
    max_tokens: int | None
    max_attempts: int
    timeout: float
    max_run_seconds: int
    endpoint: object = None
    # The task's connection; None for the default endpoint.
    connection_id: int | None = None
    # The models tried in turn after the task's own, when it fails in a way another model may not.
    fallbacks: tuple[Target, ...] = ()
    # The JSON Schema the answer must conform to (promptbeat.outputs.schema); None for plain text.
    output_schema: dict | None = None
    # None until rendered; a templated prompt is rendered after the claim.
    prompt: str | None = None
    # (error class, message) when the run must fail without a call.
    error: tuple[str, str] | None = None
    # Under a connection's rate limits (plan.endpoint.limits): the tokens counted up front, and what the
    # first attempt does about its place in line (promptbeat.ratelimits.limiter.Admission).
    estimated_tokens: int = 0
    admission: object = None

    def targets(self):
        """The models to ask, in order: the task's own, then its fallbacks."""
        return (Target(self.model, self.connection_id, self.endpoint), *self.fallbacks)


@dataclass(frozen=True)
class Start:
    """What a claim records on the run as it starts."""

    model: str
    started_at: datetime
    deadline_at: datetime
    worker: str | None
    prompt: str | None
    # The claim that holds the run (promptbeat.runs.liveness): only its holder may finish the run.
    runner: str | None = None

    def columns(self):
        return asdict(self)


@dataclass
class Result:
    """How a run's call ended: its final status, output or error, usage and attempts."""

    status: RunStatus
    duration_ms: int
    attempts: list = field(default_factory=list)
    output: str | None = None
    error: str | None = None
    error_class: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    # The model and connection that gave the answer: the task's own, or a fallback's.
    answered_model: str | None = None
    answered_connection_id: int | None = None
    # Set by promptbeat.outputs.answers for a successful call: the parsed answer and how it changed.
    parsed_output: object = None
    changed: bool | None = None
    diff: str | None = None

    @property
    def failed(self):
        return self.status == RunStatus.FAILED

    def columns(self):
        """The execution's columns this result sets (its status is the store's transition)."""
        values = asdict(self)
        del values["status"]
        return values


def parse_moment(value):
    """A datetime from a message's ISO text (naive means UTC), or None."""
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment):
    """UTC ISO text with a Z, as the attempts record it."""
    return moment.isoformat().replace("+00:00", "Z")
