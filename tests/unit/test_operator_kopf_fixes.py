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


def test_the_cheap_diff_base_only_while_no_handler_needs_diffs() -> None:
    """The operator's handlers (all on.event) get the diff base that copies nothing; a change handler
    added later gets kopf's own, so its diffs still work."""
    import kopf
    from kopf._cogs.structs import bodies

    from onair.operator import handlers  # noqa: F401  (registers the operator's handlers)

    job = bodies.Body({"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
                       "metadata": {"name": "a", "namespace": "n"}, "spec": {"online": True}})
    storage = kopf_fixes.diffbase_storage("onair.dev", "last-handled-configuration")
    assert isinstance(storage, kopf_fixes.EventHandlersOnlyDiffBase)
    assert storage.build(body=job) == {}
    assert storage.fetch(body=job) is None

    saved = kopf.get_default_registry()
    registry = kopf.OperatorRegistry()
    kopf.set_default_registry(registry)
    try:
        kopf.on.update("onair.dev", "v1alpha1", "livejobs", registry=registry)(lambda **_: None)
        storage = kopf_fixes.diffbase_storage("onair.dev", "last-handled-configuration")
        assert not isinstance(storage, kopf_fixes.EventHandlersOnlyDiffBase)
        assert storage.build(body=job)["spec"] == {"online": True}
    finally:
        kopf.set_default_registry(saved)


def test_no_per_object_memories_kept_while_no_handler_reads_them_back() -> None:
    """kopf's record of every object seen (1 kB each) is not kept for the operator's event handlers,
    which still get the operator's memo; a daemon or change handler added later gets kopf's own."""
    import kopf
    from kopf._cogs.structs import ephemera

    from onair.operator import handlers  # noqa: F401  (registers the operator's handlers)

    async def recall(memories: kopf_fixes.inventory.ResourceMemories) -> tuple[object, int]:
        memobase = ephemera.AnyMemo(kopf.Memo(controller="the controller"))
        memory = await memories.recall({"metadata": {"uid": "u1"}}, memobase=memobase)
        return memory.memo.controller, len(list(memories.iter_all_memories()))

    memories = kopf_fixes.memories()
    assert isinstance(memories, kopf_fixes.EventHandlersOnlyMemories)
    assert asyncio.run(recall(memories)) == ("the controller", 0)

    saved = kopf.get_default_registry()
    registry = kopf.OperatorRegistry()
    kopf.set_default_registry(registry)
    try:
        kopf.daemon("onair.dev", "v1alpha1", "livejobs", registry=registry)(lambda **_: None)
        memories = kopf_fixes.memories()
        assert not isinstance(memories, kopf_fixes.EventHandlersOnlyMemories)
        assert asyncio.run(recall(memories)) == ("the controller", 1)
    finally:
        kopf.set_default_registry(saved)
