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
    # The lifecycle's audit lines: the job, who asked (a token's sub), how many ids, never which.
    "erasure", "requested_by", "user_count", "suppress", "sub", "fields",
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
            # A field the call passed is written even when None (an unauthenticated request has
            # `"project": null`), so every access line has the same keys.
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info and record.exc_info[0] is not None:
            # The class and where it was raised, never its message or locals: a database error's
            # message can quote the row being written.
            entry["exception"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            if tb is not None:
                while tb.tb_next is not None:
                    tb = tb.tb_next
                code = tb.tb_frame.f_code
                entry["exception_at"] = f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"
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
