"""Email deliveries: a multipart message (text and HTML, the output and the diff escaped) sent once over SMTP."""
import html
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

from promptbeat.notify.outcome import Outcome
from promptbeat.runs.states import RunStatus

SMTP_TIMEOUT_SECONDS = 30
# What a mail shows of an answer or a diff; the run's page has all of it.
BODY_CHARS = 100_000


def message(settings, to, task, execution, reasons):
    """The email for a finished run; every run text goes into the HTML part escaped (outputs are untrusted)."""
    mail = EmailMessage(policy=SMTP)
    # The task's name is one line (validation refuses line breaks); the policy refuses them too.
    mail["Subject"] = f"[promptbeat] {task.name}: {execution.status}"
    mail["From"] = settings.smtp_from
    mail["To"] = ", ".join(to)
    mail["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
    body = (execution.output if execution.status == RunStatus.SUCCESS else execution.error) or ""
    diff = execution.diff or ""
    why = ", ".join(str(reason) for reason in reasons)
    lines = [f"Task: {task.name}", f"Run: {execution.id} ({execution.status}, {execution.trigger})",
             f"Notified on: {why}", "", body[:BODY_CHARS]]
    if diff:
        lines += ["", "Changes:", diff[:BODY_CHARS]]
    mail.set_content("\n".join(lines))
    e = html.escape
    parts = [f"<p><strong>{e(task.name)}</strong>: run {execution.id} ({e(execution.status)}, "
             f"{e(execution.trigger)})<br>Notified on: {e(why)}</p>", f"<pre>{e(body[:BODY_CHARS])}</pre>"]
    if diff:
        parts += ["<h3>Changes</h3>", f"<pre>{e(diff[:BODY_CHARS])}</pre>"]
    mail.add_alternative("<!doctype html><html><body>" + "".join(parts) + "</body></html>", subtype="html")
    return mail


def deliver(settings, to, task, execution, reasons):
    """Send a finished run's email once through the configured SMTP server.

    4xx replies and network errors are worth another try; 5xx replies and a missing configuration are not.
    """
    if not settings.smtp_host or not settings.smtp_from:
        return Outcome.failure("PROMPTBEAT_SMTP_HOST and PROMPTBEAT_SMTP_FROM must be set to send email.",
                               retryable=False)
    mail = message(settings, to, task, execution, reasons)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
            if settings.smtp_starttls:
                # A verifying context: smtplib's own default checks neither the certificate nor the name.
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password or "")
            refused = smtp.send_message(mail, settings.smtp_from, list(to))
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        return _refused(code, reply)
    except smtplib.SMTPResponseException as exc:
        return _refused(exc.smtp_code, exc.smtp_error)
    except (smtplib.SMTPException, OSError, socket.timeout) as exc:
        return Outcome.failure(f"{type(exc).__name__}: {exc}")
    if refused:
        code, reply = next(iter(refused.values()))
        return _refused(code, reply)
    return Outcome(True, 250, f"250 accepted for {len(to)} recipient(s)")


def _refused(code, reply):
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    # 4xx is a temporary refusal (greylisting, a full queue); 5xx is final.
    return Outcome.failure(f"{code} {text}", code, retryable=400 <= code < 500)
