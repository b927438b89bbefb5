"""Fixes to kopf: a storage for handlers.py, and a patch applied before kopf runs (main.py).

kopf's namespace observer lists the namespaces, then starts a watch that lists them again and ignores
that second listing (events of type None). A namespace created between the two lists is in neither
the first listing nor a watch event: kopf never watches it, and its jobs are never reconciled. It
happened to an operator started moments before a namespace of jobs was created (a test, the scale
benchmark). Taking the watch's listing in as well only re-adds namespaces already known.
"""

from __future__ import annotations

from typing import Any

import kopf
from kopf._cogs.structs import bodies
from kopf._core.reactor import observation


class EventHandlersOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """The diff base of an operator whose handlers are all on.event handlers.

    kopf builds every event's object "essence" (a deep copy of the whole object, status and
    managedFields included, then trimmed) to tell changes apart for on.create/on.update/on.resume
    and daemon handlers. The operator has none of those: its handlers hand events to the controller
    as they come. The copies were a third of the operator's CPU in a burst of new jobs (the scale
    bench), for a diff nobody reads. `diffbase_storage` picks it only while that holds."""

    def build(self, *, body: bodies.Body, extra_fields: Any = None) -> bodies.BodyEssence:
        return bodies.BodyEssence()

    def fetch(self, *, body: bodies.Body) -> bodies.BodyEssence | None:
        return None


def diffbase_storage(prefix: str, key: str) -> kopf.DiffBaseStorage:
    """kopf's own storage if any handler needs diffs, the cheap one otherwise."""
    registry = kopf.get_default_registry()
    if registry._changing.get_all_handlers() or registry._spawning.get_all_handlers():
        return kopf.AnnotationsDiffBaseStorage(prefix=prefix, key=key)
    return EventHandlersOnlyDiffBase(prefix=prefix, key=key)


async def process_namespace_event_including_the_listing(
        *, raw_event: Any, namespaces: Any, insights: Any, **_: Any) -> None:
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def apply() -> None:
    # namespace_observer looks the processor up in its module when it starts the watch.
    observation.process_discovered_namespace_event = process_namespace_event_including_the_listing
