"""Webhooks: a receiver on 127.0.0.1 gets the payload; failures are retried and recorded; private targets refused."""
import dataclasses
import json
import socket
import ssl
from datetime import datetime, timedelta, timezone

import httpx2 as httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from promptbeat.runs import delivery
from promptbeat.extensions import db
from promptbeat.models import Execution, Task
from tests.receivers import Answer, Receiver
from tests.runner import run_and_reload


class HookReceiver(Receiver):
    """A receiver at /hook that answers `failures` times with failure_status first, then 200."""

    def __init__(self, failures=0, failure_status=500, headers=()):
        super().__init__(lambda received: (Answer(failure_status, headers=headers)
                                           if len(self.requests) <= failures else Answer()))
        self.url += "/hook"

    @property
    def bodies(self):
        return [json.loads(request.body) for request in self.requests]

    @property
    def hosts(self):
        return [request.headers["host"] for request in self.requests]


@pytest.fixture
def receiver():
    made = []

    def make(failures=0, failure_status=500, headers=()):
        made.append(HookReceiver(failures, failure_status, headers))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def run_with_webhook(app, prompt, url, kind="json"):
    with app.app_context():
        task = Task(name="Hooked", prompt=prompt, model="fake-model", schedule_type="interval",
                    interval_seconds=600, webhook_url=url, webhook_format=kind)
        db.session.add(task)
        db.session.commit()
        run_id = run_and_reload(task.id, trigger="manual", sleep=lambda s: None).id
        db.session.remove()
        return db.session.get(Execution, run_id)


def test_receiver_gets_the_json_payload(app, fake_llm, receiver):
    hook = receiver()
    with app.app_context():
        execution = run_with_webhook(app, "Report please", hook.url)
        (body,) = hook.bodies
        assert body["task"]["name"] == "Hooked"
        assert body["run"]["id"] == execution.id and body["status"] == "success"
        assert body["output"] == "echo: Report please"
        assert body["usage"]["total_tokens"] == execution.total_tokens and body["usage"]["cost_usd"] > 0
        assert execution.webhook_status == "delivered"


def test_slack_format_sends_text(app, fake_llm, receiver):
    hook = receiver()
    run_with_webhook(app, "Slack it", hook.url, kind="slack")
    (body,) = hook.bodies
    assert set(body) == {"text"} and "*Hooked*" in body["text"] and "echo: Slack it" in body["text"]


def test_failed_deliveries_are_retried_and_recorded(app, fake_llm, receiver):
    hook = receiver(failures=2)
    with app.app_context():
        execution = run_with_webhook(app, "Retry hook", hook.url)
        assert len(hook.bodies) == 3
        assert execution.webhook_status == "delivered"
        assert [a["status"] for a in execution.webhook_attempts] == [500, 500, 200]


def test_a_failing_webhook_never_fails_the_run(app, fake_llm, receiver):
    hook = receiver(failures=99)
    with app.app_context():
        execution = run_with_webhook(app, "Hook down", hook.url)
        assert execution.status == "success" and execution.webhook_status == "failed"
        assert len(execution.webhook_attempts) == app.config["PROMPTBEAT"].webhook_attempts


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "ftp://example.com/x",
                                 # IPv6 spellings of a loopback IPv4 address: compatible, NAT64, 6to4, mapped.
                                 "http://[::127.0.0.1]/hook", "http://[64:ff9b::7f00:1]/hook",
                                 "http://[2002:7f00:1::]/hook", "http://[::ffff:127.0.0.1]/hook",
                                 "http://0.0.0.0:9/hook", "http://[::]:9/hook", "http://100.64.0.1/hook",
                                 "http://[::1/hook"])
def test_private_targets_are_refused_at_save_and_at_delivery(app, api, url):
    original = app.config["PROMPTBEAT"]
    app.config["PROMPTBEAT"] = strict = dataclasses.replace(original, webhook_allow_private=False)
    try:
        response = api.post("/tasks", json={"name": "SSRF", "prompt": "x", "schedule_type": "crontab",
                                            "cron": "0 9 * * *", "webhook_url": url})
        assert response.status_code == 422
        assert "webhook_url" in response.get_json()["fields"]
        status, attempts = delivery.deliver(url, {"text": "x"}, strict)
        assert status == "refused" and len(attempts) == 1 and "error" in attempts[0]
    finally:
        app.config["PROMPTBEAT"] = original


def test_a_redirect_is_not_followed(app, fake_llm, receiver):
    inside = receiver()
    hook = receiver(failures=99, failure_status=307, headers=[("Location", inside.url)])
    with app.app_context():
        execution = run_with_webhook(app, "Redirected", hook.url)
        assert execution.webhook_status == "failed" and inside.bodies == []
        assert {a["status"] for a in execution.webhook_attempts} == {307}


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (404, 1), (410, 1), (408, 3), (429, 3), (503, 3)])
def test_only_timeouts_rate_limits_and_server_errors_are_retried(app, fake_llm, receiver, status, attempts):
    hook = receiver(failures=99, failure_status=status)
    with app.app_context():
        execution = run_with_webhook(app, f"Answered {status}", hook.url)
        assert execution.webhook_status == "failed"
        assert [a["status"] for a in execution.webhook_attempts] == [status] * attempts
        assert len(hook.bodies) == attempts


def test_delivery_goes_to_the_address_that_was_checked_not_to_a_second_answer(app, receiver, monkeypatch):
    # DNS rebinding: the name answers a checked address first and another one afterwards. Delivery
    # must connect where the check looked, with the name kept in the Host header.
    hook = receiver()
    port = hook.server.server_address[1]
    real_getaddrinfo, answers = socket.getaddrinfo, []

    def rebinding(host, *args, **kwargs):
        if host != "hooks.rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "10.255.255.1")
        return real_getaddrinfo(answers[-1], *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = dataclasses.replace(app.config["PROMPTBEAT"], webhook_timeout_seconds=2)
    status, attempts = delivery.deliver(f"http://hooks.rebind.test:{port}/hook", {"text": "x"}, settings,
                                        sleep=lambda seconds: None)
    assert (status, answers) == ("delivered", ["127.0.0.1"])
    assert hook.bodies == [{"text": "x"}] and hook.hosts == [f"hooks.rebind.test:{port}"]


def self_signed_for(name, directory):
    """A certificate for name (its own CA) and its key, as PEM files in directory."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(1)
                   .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_an_https_delivery_sent_to_an_address_still_verifies_the_certificate_against_the_name(receiver, tmp_path):
    hook = receiver()
    cert_file, key_file = self_signed_for("hooks.example.test", tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    hook.server.socket = server_context.wrap_socket(hook.server.socket, server_side=True)
    port = hook.server.server_address[1]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert_file))) as client:
        request = delivery.pinned_request(client, f"https://hooks.example.test:{port}/hook", "127.0.0.1", {"n": 1})
        assert client.send(request).status_code == 200
        assert hook.hosts == [f"hooks.example.test:{port}"]
        wrong_name = delivery.pinned_request(client, f"https://other.example.test:{port}/hook", "127.0.0.1", {})
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.send(wrong_name)
