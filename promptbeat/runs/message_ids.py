"""The Celery message of a run as Flower shows it: its id (derived from the run), its name, its link."""
import uuid
from datetime import timezone

# Message ids are derived, not stored: the web links a run to its Flower entry from the run's own
# columns, and a redelivered or re-sent message keeps the id Flower already knows.
NAMESPACE = uuid.UUID("5d0f7c4e-2b8a-4f0e-9a51-6a1f3c0b9e27")


def id_for_run(execution_id):
    """The Celery task id of the message that runs an execution created before it was queued."""
    return str(uuid.uuid5(NAMESPACE, f"run:{int(execution_id)}"))


def id_for_slot(task_id, slot):
    """The Celery task id of the message that fires a task's scheduled slot (beat creates no row)."""
    if slot.tzinfo is None:
        slot = slot.replace(tzinfo=timezone.utc)
    return str(uuid.uuid5(NAMESPACE, f"slot:{int(task_id)}:{slot.astimezone(timezone.utc).isoformat()}"))


def message_id(execution):
    """The Celery task id of the message that carried this run."""
    if execution.slot is not None:
        return id_for_slot(execution.task_id, execution.slot)
    return id_for_run(execution.id)


def shadow_name(task_id):
    """The name Flower lists for a run's message: which promptbeat task it runs, by id.

    Ids only: a task's name is user text, and its prompt may hold anything.
    """
    return f"promptbeat task {int(task_id)}"


def flower_url(base, execution):
    """The page of this run's message in the Flower at base, or None without a base."""
    if not base:
        return None
    return f"{base.rstrip('/')}/task/{message_id(execution)}"
