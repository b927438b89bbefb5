"""Deterministic names for the objects a job owns, so a retried or repeated reconcile finds, rather
than duplicates, what an earlier one created (the scheme of Argo Workflows' pod_name.go)."""

from __future__ import annotations

MAX_LABEL_NAME = 63  # DNS-1123 label: Pod host names and Service names must fit
MAX_SUBDOMAIN_NAME = 253  # DNS-1123 subdomain: most other objects' names (Secrets)


def fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def _fit(prefix: str, suffix: str, limit: int = MAX_LABEL_NAME) -> str:
    prefix = prefix[: limit - len(suffix) - 1].rstrip("-.")
    return f"{prefix}-{suffix}"


def pod_name(job_name: str, role: str, job_uid: str, attempt: int) -> str:
    """`<job>-<role>-<fnv32a(uid/attempt)>`: a new name per attempt, the same name for the same attempt."""
    return _fit(f"{job_name}-{role}", str(fnv32a(f"{job_uid}/{attempt}")))


def service_name(job_name: str, job_uid: str) -> str:
    # Service names are DNS-1035 labels (must start with a letter); job names may be GUIDs.
    return _fit(f"ingest-{job_name}", str(fnv32a(job_uid)))


# The job's uid is in its Secret's name: a job deleted and re-created with the same name must never
# pick up the old job's Secret (with the old keys and owner) while the garbage collector removes it.


def stream_key_secret_name(job_name: str, job_uid: str) -> str:
    """A LiveJob's Secret, `<job>-stream-key-<fnv32a(uid)>`: its stream key and its encoder's control key."""
    return _fit(f"{job_name}-stream-key", str(fnv32a(job_uid)), MAX_SUBDOMAIN_NAME)


def control_key_secret_name(job_name: str, job_uid: str) -> str:
    """A RecordJob's Secret, `<job>-control-key-<fnv32a(uid)>`: its recorder's control key."""
    return _fit(f"{job_name}-control-key", str(fnv32a(job_uid)), MAX_SUBDOMAIN_NAME)


def job_secret_name(kind: str, job_name: str, job_uid: str) -> str:
    return (stream_key_secret_name if kind == "LiveJob" else control_key_secret_name)(job_name, job_uid)
