"""The rule that decides whether a replica may act, over kopf's peering records."""

from __future__ import annotations

import datetime as dt

import pytest

from onair.operator.leadership import may_act

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def peering(**peers: tuple[int, dt.datetime]) -> dict[str, object]:
    return {"status": {name: {"priority": priority, "lifetime": 10, "lastseen": seen.isoformat()}
                       for name, (priority, seen) in peers.items()}}


def test_a_replica_acts_unless_a_live_peer_outranks_or_ties_it() -> None:
    fresh, expired = NOW - dt.timedelta(seconds=3), NOW - dt.timedelta(seconds=11)
    assert may_act([], "me", 100, NOW)
    assert may_act([peering(me=(100, fresh))], "me", 100, NOW)  # its own record
    assert may_act([peering(me=(100, fresh), other=(50, fresh))], "me", 100, NOW)
    assert not may_act([peering(me=(100, fresh), other=(200, fresh))], "me", 100, NOW)
    assert not may_act([peering(me=(100, fresh), other=(100, fresh))], "me", 100, NOW)  # a tie: all stand by
    assert may_act([peering(me=(100, fresh), other=(200, expired))], "me", 100, NOW)  # a dead leader
    # Namespaced peering: one object per namespace, any of them counts.
    assert not may_act([peering(me=(100, fresh)), peering(other=(300, fresh))], "me", 100, NOW)
