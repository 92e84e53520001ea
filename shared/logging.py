"""JSON lines on stdout, one object per record.

Only the fields named here are written: a record's free-form `extra` never reaches the output,
so tokens, Authorization headers and event payloads cannot leak through a careless log call.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

import orjson

# Fields a log call may attach with extra={...}; everything else is dropped.
ALLOWED_FIELDS = (
    "request_id", "method", "route", "path", "status", "duration_ms", "project", "router",
    "events", "accepted", "duplicates", "rejected", "error",
)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ALLOWED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger and uvicorn's loggers through one JSON handler on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our middleware writes the access line, with the route template and project.
    logging.getLogger("uvicorn.access").disabled = True
