"""The fix to kopf's namespace observer (operator/kopf_fixes.py)."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation

from onair.operator import kopf_fixes

pytestmark = pytest.mark.unit


def test_a_namespace_only_in_the_watchs_own_listing_is_watched() -> None:
    """Created between kopf's first list and its watch's list, a namespace reaches kopf only as a
    listing event (type None), which kopf itself ignores."""

    async def scenario() -> set[object]:
        insights = references.Insights()
        listed = {"type": None, "object": {"metadata": {"name": "t-late"}}}
        unmatched = {"type": None, "object": {"metadata": {"name": "kube-system"}}}
        kopf_fixes.apply()
        for event in (listed, unmatched):
            await observation.process_discovered_namespace_event(raw_event=event, namespaces=["t-*"],
                                                                 insights=insights)
        return set(insights.namespaces)

    assert asyncio.run(scenario()) == {"t-late"}
