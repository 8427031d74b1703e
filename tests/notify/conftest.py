"""Fixtures for deliveries: a real SMTP server and HTTP receivers on 127.0.0.1, and the delivery queue drained here."""
import base64
import dataclasses
import email
import email.policy
import json

import pytest
from aiosmtpd.controller import Controller

from promptbeat.extensions import db
from promptbeat.models import Task
from promptbeat.notify.tasks import deliver_task
from tests.receivers import Answer, Receiver
from tests.runner import run_and_reload
from tests.services import free_port

QUEUE = "promptbeat"
# The port of the SMTP server real workers send to: their environment is set before the server starts.
WORKER_SMTP_PORT = free_port()
WORKER_SMTP_ENV = {"PROMPTBEAT_SMTP_HOST": "127.0.0.1", "PROMPTBEAT_SMTP_PORT": str(WORKER_SMTP_PORT),
                   "PROMPTBEAT_SMTP_FROM": "promptbeat@example.com", "PROMPTBEAT_SMTP_STARTTLS": "false"}


class Mailbox:
    """An aiosmtpd handler that keeps every message, or refuses at DATA with a given reply."""

    def __init__(self, refuse=None):
        self.refuse = refuse
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return self.refuse
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@dataclasses.dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int


@pytest.fixture
def smtp_server(swap_settings):
    """A real SMTP server on 127.0.0.1; the app's settings send to it (no STARTTLS: it is local)."""
    started = []

    def start(refuse=None):
        mailbox = Mailbox(refuse)
        port = free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        started.append(controller)
        swap_settings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="promptbeat@example.com", smtp_starttls=False)
        return SmtpServer(mailbox, port)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def mailbox():
    """A real SMTP server on WORKER_SMTP_PORT for the module's worker; its messages, kept."""
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=WORKER_SMTP_PORT)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def receivers():
    """Start HTTP receivers on 127.0.0.1: receivers(answer) -> Receiver."""
    started = []

    def start(answer=lambda received: Answer()):
        started.append(Receiver(answer))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


@dataclasses.dataclass(frozen=True)
class Queued:
    """A delivery message as the broker holds it."""

    args: list
    countdown: bool


def drain(app, redis_client, rounds=20):
    """Run every queued delivery message here, as a worker would, until none is left; returns the messages run.

    A retry is a new message with a countdown; it is run at once here, and its countdown shows in `countdown`.
    """
    ran = []
    for _ in range(rounds):
        messages = [json.loads(raw) for raw in redis_client.lrange(QUEUE, 0, -1)][::-1]
        deliveries = [m for m in messages if m["headers"]["task"] == deliver_task.name]
        if not deliveries:
            return ran
        redis_client.delete(QUEUE)
        for message in messages:
            if message not in deliveries:
                redis_client.lpush(QUEUE, json.dumps(message))
        for message in deliveries:
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            ran.append(Queued(args, message["headers"].get("eta") is not None))
            with app.app_context():
                deliver_task(*args, **kwargs)
    raise AssertionError("deliveries kept being queued")


def make_task(app, channel_ids, prompt="Report", **values):
    """A task that delivers to the given channels; returns its id."""
    from promptbeat.models import Channel

    with app.app_context():
        task = Task(name="Notified", prompt=prompt, model="fake-model", schedule_type="interval",
                    interval_seconds=600, **values)
        task.channels = [db.session.get(Channel, channel_id) for channel_id in channel_ids]
        db.session.add(task)
        db.session.commit()
        return task.id


def run_once(app, task_id, trigger="scheduled"):
    """One run through the worker's path; returns the run's id and status."""
    with app.app_context():
        run = run_and_reload(task_id, trigger=trigger, sleep=lambda seconds: None)
        return run.id, run.status
