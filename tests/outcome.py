"""Whether the test a fixture serves has failed (set by the report hook in conftest.py)."""

from __future__ import annotations

import pytest


def has_failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")
    )
