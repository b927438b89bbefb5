"""Reading a Pod's state the way the reconciler needs it (pure)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from onair.operator.builders import LABEL_FINISH_ONLY, LABEL_SPEC_GENERATION


@dataclass(frozen=True)
class PodState:
    name: str
    ip: str | None
    scheduled: bool | None  # None: the scheduler has not decided yet
    unschedulable_message: str | None
    ready: bool
    running: bool
    terminating: bool
    finished: bool
    exit_code: int | None
    exit_message: str | None
    finished_at: dt.datetime | None
    waiting_reason: str | None
    waiting_message: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None  # when the container started (running or terminated since)
    spec_generation: int | None = None  # the job's generation the Pod was made from (older Pods: None)
    # deletionTimestamp: when the grace period of a Pod being deleted ends and the kubelet kills it.
    killed_by: dt.datetime | None = None
    termination_message: str | None = None  # what the container wrote at its terminationMessagePath
    finish_only: bool = False  # made only to close the playlists a dead encoder left open


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _scheduled(node_name: str | None, condition_status: str | None) -> bool | None:
    if node_name or condition_status == "True":
        return True
    return False if condition_status == "False" else None


def pod_state(pod: dict[str, Any]) -> PodState:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    containers = status.get("containerStatuses") or []
    terminated = next((c["state"]["terminated"] for c in containers if (c.get("state") or {}).get("terminated")), None)
    running = next((c["state"]["running"] for c in containers if (c.get("state") or {}).get("running")), None)
    waiting = next((c["state"]["waiting"] for c in containers if (c.get("state") or {}).get("waiting")), None)
    phase = status.get("phase")
    finished = phase in ("Succeeded", "Failed")
    labels = pod["metadata"].get("labels") or {}
    return PodState(
        name=pod["metadata"]["name"],
        ip=status.get("podIP"),
        scheduled=_scheduled(pod.get("spec", {}).get("nodeName"), scheduled.get("status")),
        unschedulable_message=scheduled.get("message") if scheduled.get("reason") == "Unschedulable" else None,
        ready=conditions.get("Ready", {}).get("status") == "True" and not finished,
        running=phase == "Running",
        terminating=bool(pod["metadata"].get("deletionTimestamp")),
        killed_by=_parse_time(pod["metadata"].get("deletionTimestamp")),
        finished=finished,
        exit_code=None if terminated is None else terminated.get("exitCode"),
        exit_message=None if terminated is None else (terminated.get("message") or terminated.get("reason")),
        termination_message=None if terminated is None else (terminated.get("message") or None),
        finished_at=None if terminated is None else _parse_time(terminated.get("finishedAt")),
        waiting_reason=None if waiting is None else waiting.get("reason"),
        waiting_message=None if waiting is None else waiting.get("message"),
        created_at=_parse_time(pod["metadata"].get("creationTimestamp")),
        started_at=_parse_time((terminated or running or {}).get("startedAt")),
        spec_generation=int(generation) if (generation := labels.get(LABEL_SPEC_GENERATION, "")).isdigit() else None,
        finish_only=labels.get(LABEL_FINISH_ONLY) == "true",
    )
