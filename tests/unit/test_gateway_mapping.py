"""The gateway's mapping of Kubernetes facts into the API's terms."""

from __future__ import annotations

import pytest

from onair.api_gateway import mapping


@pytest.mark.parametrize(("text", "value"), [
    ("250m", 0.25), ("2", 2.0), ("1Gi", 2.0**30), ("123456789n", 0.123456789), ("1.5k", 1500.0), ("1e3", 1000.0),
    ("512Mi", 2.0**29), ("", None), ("lots", None), ("1Gb", None), (None, None),
])
def test_kubernetes_quantities(text: str | None, value: float | None) -> None:
    if value is None:
        assert mapping.quantity(text) is None
    else:
        assert mapping.quantity(text) == pytest.approx(value)


def test_usage_in_percent_of_what_is_allocatable() -> None:
    assert mapping.percent_of("1500m", "2") == 75
    assert mapping.percent_of("3Gi", "4Gi") == 75
    assert mapping.percent_of("1", "0") is None and mapping.percent_of(None, "2") is None


@pytest.mark.parametrize(("text", "shown"), [
    ("2030-01-01T02:00:00.5+02:00", "2030-01-01T00:00:00.500Z"),
    ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
    ("2030-01-01T01:00:00.123456+01:00", "2030-01-01T00:00:00.123456Z"),
    ("2030-01-01T00:00:00", "2030-01-01T00:00:00"),  # no zone: left as it is (the API refuses such input)
    ("", None), (None, None),
])
def test_times_are_shown_in_utc_with_a_z_to_the_precision_they_have(text: str | None, shown: str | None) -> None:
    assert mapping.iso(text) == shown


def test_a_time_in_milliseconds_is_shown_as_the_other_times_are() -> None:
    assert mapping._ms_to_iso(1704067200123) == "2024-01-01T00:00:00.123Z"
    assert mapping._ms_to_iso(1704067200000) == "2024-01-01T00:00:00Z"


def test_a_job_switched_on_again_has_no_end_while_its_status_still_says_offline() -> None:
    """endDateTime is when a job went Offline; one switched on again (online: true) before the operator
    moved it on is not ended, as the client that has just switched it on reads it."""
    offline = {"phase": "Offline", "startedAt": "2026-12-07T05:00:00Z",
               "timings": [{"phase": "Live", "time": "2026-12-07T05:00:00Z"},
                           {"phase": "Offline", "time": "2026-12-07T05:10:00Z"}]}
    assert mapping.live_job_times({"spec": {"online": False}, "status": offline}) == (
        "2026-12-07T05:00:00Z", "2026-12-07T05:10:00Z")
    assert mapping.live_job_times({"spec": {"online": True}, "status": offline}) == ("2026-12-07T05:00:00Z", None)
    assert mapping.live_job_times({"spec": {}, "status": offline})[1] is None  # online defaults to true
    completed = {**offline, "phase": "Completed", "timings": [{"phase": "Completed", "time": "2026-12-07T06:00:00Z"}]}
    assert mapping.live_job_times({"spec": {"online": True}, "status": completed})[1] == "2026-12-07T06:00:00Z"
