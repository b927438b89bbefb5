import json
import logging

from onair.jsonlog import JsonFormatter, add_context, job_context


def test_json_lines_carry_the_job_and_project() -> None:
    record = logging.LogRecord("onair.operator", logging.ERROR, __file__, 1, "reconcile of %s failed", ("news",),
                               None)
    for key, value in job_context("LiveJob", "team-a", "news", project="p-1").items():
        setattr(record, key, value)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "reconcile of news failed"
    assert (entry["level"], entry["kind"], entry["namespace"], entry["job"], entry["project"]) == (
        "ERROR", "LiveJob", "team-a", "news", "p-1")


def test_process_context_is_on_every_line() -> None:
    add_context(job="recorder-1", namespace="team-b")
    record = logging.LogRecord("onair.encoder", logging.INFO, __file__, 1, "segment uploaded", (), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["job"] == "recorder-1" and entry["namespace"] == "team-b"
