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
from kopf._cogs.structs import bodies, ephemera
from kopf._core.reactor import inventory, observation


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


def _only_event_handlers() -> bool:
    registry = kopf.get_default_registry()
    return not any(kinds.get_all_handlers() for kinds in (
        registry._changing, registry._spawning, registry._indexing, registry._webhooks))


def diffbase_storage(prefix: str, key: str) -> kopf.DiffBaseStorage:
    """kopf's own storage if any handler needs diffs, the cheap one otherwise."""
    if _only_event_handlers():
        return EventHandlersOnlyDiffBase(prefix=prefix, key=key)
    return kopf.AnnotationsDiffBaseStorage(prefix=prefix, key=key)


class EventHandlersOnlyMemories(inventory.ResourceMemories):
    """Per-object memories of an operator whose handlers are all on.event handlers: none kept.

    kopf keeps a record for every object it has seen until the object is deleted (a copy of the
    memo, an error throttler, and the state of daemons, indexes and change handlers): about 1 kB
    each, 20 MB for 10,000 jobs and their Pods. Only daemons, indexes, admission webhooks and change
    handlers read it back in a later event. An event handler still gets a copy of the operator's memo,
    and an error in kopf's processing of an object still pauses that object's events, for the first
    of kopf's error delays every time rather than for longer and longer ones. `memories` picks it
    only while that holds."""

    async def recall(self, raw_body: bodies.RawBody, *, memobase: ephemera.AnyMemo | None = None,
                     noticed_by_listing: bool = False, ephemeral: bool = False) -> inventory.ResourceMemory:
        return await super().recall(raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing,
                                    ephemeral=True)


def memories() -> inventory.ResourceMemories:
    """kopf's own memories if any handler reads them back, none kept otherwise."""
    if _only_event_handlers():
        return EventHandlersOnlyMemories()
    return inventory.ResourceMemories()


async def process_namespace_event_including_the_listing(
        *, raw_event: Any, namespaces: Any, insights: Any, **_: Any) -> None:
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def apply() -> None:
    # namespace_observer looks the processor up in its module when it starts the watch.
    observation.process_discovered_namespace_event = process_namespace_event_including_the_listing
