"""Bulk publishing for beat: a batch of task messages in one Redis command instead of one round trip each.

Celery's send_task does routing lookups, declarations and a sent event for every message;
a burst of thousands of due tasks would queue behind it. The first message
of each task name is built by Celery and kombu as usual and kept as JSON text; later ones
fill in only what differs per message (ids, shadow name, body, the arguments' reprs), so
the worker receives exactly what send_task would have sent. The whole batch goes out in one
LPUSH. Other brokers, or a serializer other than JSON, fall back to send_task.
"""
import json
import logging
import re
from base64 import b64decode, b64encode
from json.encoder import encode_basestring_ascii as quote
from typing import NamedTuple
from uuid import uuid4

from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as kombu_dumps

logger = logging.getLogger(__name__)

# A placeholder id, replaced in every message built from a template.
TEMPLATE_ID = "00000000-0000-4000-8000-000000000000"
MARKER = re.compile(r"@@(BODY|ID|TAG|SHADOW|ARGSREPR|KWARGSREPR)@@")
# The shadow name is a JSON value of its own (a string, or null without one), not part of a string.
SHADOW_VALUE = '"@@SHADOW@@"'


class Template(NamedTuple):
    """A task's message as a format string of JSON text, with fields for its per-message values."""

    text: str
    embed: dict


class BulkPublisher:
    """Collects (task name, args, kwargs) and pushes them to the default queue in one command."""

    def __init__(self, app, channel):
        self.app = app
        self.channel = channel
        self.queue = app.amqp.queues[app.conf.task_default_queue]
        self.pending = []
        self.templates = {}

    @classmethod
    def supported(cls, channel):
        return channel is not None and all(hasattr(channel, name) for name in ("_q_for_pri", "conn_or_acquire", "encode_body"))

    def add(self, name, args, kwargs, task_id=None, shadow=None):
        """Build one message (with a fresh task id unless given, and a shadow name for Flower); returns its task id."""
        task_id = task_id or str(uuid4())
        if name not in self.templates:
            self.templates[name] = self.template(name, args, kwargs)
        template = self.templates[name]
        if template is None:
            self.pending.append(json.dumps(self.build(name, task_id, args, kwargs, shadow)))
            return task_id
        # Celery's JSON body is (args, kwargs, embed); plain json gives the same bytes for the
        # plain values a fire carries, at a fraction of kombu's encoder's cost.
        body = json.dumps([args, kwargs, template.embed])
        self.pending.append(template.text.format(
            ID=task_id, TAG=uuid4(), SHADOW=json.dumps(shadow), BODY=b64encode(body.encode()).decode(),
            ARGSREPR=quote(repr(args))[1:-1], KWARGSREPR=quote(repr(kwargs))[1:-1]))
        return task_id

    def build(self, name, task_id, args, kwargs, shadow=None):
        """One message built the canonical way, by Celery and kombu, as plain JSON-able values."""
        message = self.app.amqp.as_task_v2(task_id, name, args, kwargs, argsrepr=repr(args), kwargsrepr=repr(kwargs),
                                           reply_to=self.app.thread_oid, ignore_result=None, shadow=shadow)
        content_type, content_encoding, body = serialize(message.body, serializer=self.app.conf.task_serializer)
        headers = {**message.headers, "celery_beat_task": True}
        properties = {**message.properties, "delivery_mode": 2, "priority": 0}
        prepared = self.channel.prepare_message(body, 0, content_type, content_encoding, headers, properties)
        prepared["body"], encoding = self.channel.encode_body(prepared["body"], self.channel.body_encoding)
        prepared["properties"].update(body_encoding=encoding, delivery_tag=str(uuid4()))
        prepared["properties"]["delivery_info"].update(exchange=self.queue.exchange.name,
                                                      routing_key=self.queue.routing_key)
        # Through kombu's JSON once, so what is kept holds only plain values.
        return json.loads(kombu_dumps(prepared))

    def template(self, name, args, kwargs):
        """The message of this task with its per-message values as markers, or None if it can't be templated."""
        if self.app.conf.task_serializer != "json" or self.channel.body_encoding != "base64":
            return None
        prepared = self.build(name, TEMPLATE_ID, args, kwargs)
        # Celery's body is (args, kwargs, embed); the embed (callbacks, chain, chord) is the same for every fire.
        embed = json.loads(b64decode(prepared["body"]))[2]
        prepared["body"] = "@@BODY@@"
        prepared["headers"].update(id="@@ID@@", root_id="@@ID@@", shadow="@@SHADOW@@", argsrepr="@@ARGSREPR@@",
                                   kwargsrepr="@@KWARGSREPR@@")
        # The delivery tag must be unique among unacknowledged messages; a task id need not be (a slot's
        # id is derived from the slot, and two beats may send the same slot).
        prepared["properties"].update(correlation_id="@@ID@@", delivery_tag="@@TAG@@")
        # The JSON text as a format string: literal braces doubled, markers as fields.
        text = json.dumps(prepared).replace("{", "{{").replace("}", "}}").replace(SHADOW_VALUE, "@@SHADOW@@")
        text = MARKER.sub(r"{\1}", text)
        return Template(text=text, embed=embed)

    def flush(self):
        """Push everything collected; raises on a broker error (nothing is half-recorded by the caller)."""
        if not self.pending:
            return 0
        key = self.channel._q_for_pri(self.queue.name, 0)
        with self.channel.conn_or_acquire() as client:
            # One LPUSH of many values queues them in the same order as one LPUSH each.
            client.lpush(key, *self.pending)
        count, self.pending = len(self.pending), []
        return count
