"""Logging for `snapgraph serve`: one format for every logger, text or JSON, and access lines.

`SNAPGRAPH_LOG_FORMAT=text` (a terminal) or `json` (a log pipeline: one object per line,
with `time`, `level`, `logger`, `message` and the record's structured fields). uvicorn's
loggers go through the same handler (uvicorn's own access log is off: ours carries more),
httpx and httpcore speak only from WARNING up (their DEBUG records print upstream headers,
their INFO line repeats ours). Access lines never carry a credential, a variable's value or
an upstream header: only the fields `ACCESS_FIELDS` names.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

ACCESS_FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "operation_name",
    "operation_type",
    "answered_by",
    "error_codes",
    "cache",
    "upstream_status",
    "upstream_ms",
    "trace_id",
)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...` with the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and v is not None
        )
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        text = f"{line} {extra}" if extra else line
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(level: str, log_format: str) -> None:
    """Route every logger through one handler in `log_format`, at `level`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


access_logger = logging.getLogger("snapgraph.access")


def log_access(fields: dict[str, Any]) -> None:
    """One line per request, with only the fields `ACCESS_FIELDS` names."""
    safe = {name: fields.get(name) for name in ACCESS_FIELDS}
    access_logger.info(
        "%s %s %s %.1f ms",
        safe["method"],
        safe["path"],
        safe["status"],
        safe["duration_ms"],
        extra=safe,
    )
