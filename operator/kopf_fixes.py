"""A fix to kopf, applied before it runs (main.py).

kopf's namespace observer lists the namespaces, then starts a watch that lists them again and ignores
that second listing (events of type None). A namespace created between the two lists is in neither
the first listing nor a watch event: kopf never watches it, and its jobs are never reconciled. It
happened to an operator started moments before a namespace of jobs was created (a test, the scale
benchmark). Taking the watch's listing in as well only re-adds namespaces already known.
"""

from __future__ import annotations

from typing import Any

from kopf._core.reactor import observation


async def process_namespace_event_including_the_listing(
        *, raw_event: Any, namespaces: Any, insights: Any, **_: Any) -> None:
    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def apply() -> None:
    # namespace_observer looks the processor up in its module when it starts the watch.
    observation.process_discovered_namespace_event = process_namespace_event_including_the_listing
