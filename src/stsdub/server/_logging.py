"""JSON logs: one object per line, with the fragment's identity and timings as fields."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

#: Fields taken from a record's ``extra`` into the JSON object, in this order.
FIELDS = (
    "event",
    "stream_id",
    "fragment_id",
    "sequence_number",
    "status",
    "processing_time_ms",
    "stage_timings",
    "error",
    "warnings",
    "sid",
    "worker_id",
    "severity",
    "action",
    "current_inflight",
    "max_inflight",
    "code",
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (``timestamp``, ``level``, ``message``, fields)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        body: dict[str, Any] = {
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record (the service's, the library's, uvicorn's) to stderr.

    Called by ``stsdub serve``; an application embedding the service keeps its own setup.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Socket.IO logs every packet at INFO; keep only its warnings.
    for name in ("socketio", "engineio", "socketio.server", "engineio.server"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
