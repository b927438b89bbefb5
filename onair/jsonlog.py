"""Logging set-up shared by the operator, the gateway and the encoder.

ONAIR_LOG_FORMAT=json (the Helm chart's default) writes one JSON object per line with the job,
namespace, kind and project it concerns, so a log pipeline can filter by job; `text` (the default
on a terminal) is for people.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

CONTEXT_FIELDS = ("kind", "namespace", "job", "project")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_process_context: dict[str, Any] = {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_process_context,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str | int = "INFO") -> None:
    handler = logging.StreamHandler()
    json_format = os.environ.get("ONAIR_LOG_FORMAT", "text").lower() == "json"
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def add_context(**fields: Any) -> None:
    """Fields every later record of this process carries (the encoder's job, for example)."""
    _process_context.update({k: v for k, v in fields.items() if v is not None})


def job_context(kind: str, namespace: str, job: str, project: str | None = None) -> dict[str, Any]:
    """`extra=` for one log call about one job."""
    return {"kind": kind, "namespace": namespace, "job": job, "project": project}
