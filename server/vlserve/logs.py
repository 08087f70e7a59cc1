"""The server's log lines: `text` (one readable line) or `json` (one object per line, for log
collectors). uvicorn's own loggers propagate to the same handler, so its access and error
lines take the same format and carry the request id (middleware sets `record.request_id`)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
NO_REQUEST = "-"  # middleware.REQUEST_ID's value outside a request


class JsonFormatter(logging.Formatter):
    """time (UTC, ISO 8601), level, logger, message, and request_id / exception when there are."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", NO_REQUEST)
        if request_id != NO_REQUEST:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT, defaults={"request_id": NO_REQUEST})


def configure(level: str, log_format: str, stream=None) -> logging.Handler:
    """One stderr handler on the root logger; uvicorn's loggers lose theirs and propagate to it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python's warnings too: every line in one format
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    return handler
