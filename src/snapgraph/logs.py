r"""Logging for `snapgraph serve`: one format for every logger, text or JSON, and access lines.

`SNAPGRAPH_LOG_FORMAT=text` (a terminal) or `json` (a log pipeline: one object per line,
with `time`, `level`, `logger`, `message` and the record's structured fields). uvicorn's
loggers go through the same handler (uvicorn's own access log is off: ours carries more),
httpx and httpcore speak only from WARNING up (their DEBUG records print upstream headers,
their INFO line repeats ours). Access lines never carry a credential, a variable's value or
an upstream header: only the fields `ACCESS_FIELDS` names.

A caller chooses much of what is logged (the path above all), so neither format lets it start
a line, reach a terminal as an escape sequence or pass for a field of its own: text lines escape
control characters, the Unicode line separators and the backslash (`\n`, `\x1b`, `\u2028`,
`\\`), and write the fields as logfmt does (`path="/x status=200"`); the access message writes
the path percent-encoded (`GET /x%20status%3D200 404 1.2 ms`). JSON escapes control characters
(and every non-ASCII character) as `\u001b`. uvicorn's `color_message`, its message again with
ANSI colours, is never written.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import quote

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
# Not written: the record's own attributes, and uvicorn's copy of its message in ANSI colours.
_NOT_FIELDS = _STANDARD | {"color_message"}
# C0, DEL, C1 (NEL, CSI among them), the separators some viewers end a line at, and the
# backslash: doubled, so that a caller's literal `\n` cannot pass for an escaped newline.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# What a logfmt reader would not take whole in a bare value: any whitespace (Unicode's too,
# for readers that split on it), `=`, `"`. A value with an escape in it is quoted too, so that
# a reader unquoting it gets the original back.
_NOT_BARE = re.compile(r'[\s="]')
# The characters a path may hold unencoded (RFC 3986 pchar) but `=`, so the path stays one
# word of the access message with no `key=value` in it.
_PATH_SAFE = "/:@!$&'()*+,;"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _NOT_FIELDS}


def escape(text: str) -> str:
    r"""`text` on one line with no terminal control in it: `\n`, `\x1b`, `\u2028`, `\\`."""
    return _CONTROL.sub(_escaped, text)


def _logfmt_value(value: object) -> str:
    r"""`404`, `"/x status=200"`, `"a\"b\\c\n"`, `""`: bare only when a reader takes it whole."""
    text = str(value)
    if text and not _NOT_BARE.search(text) and not _CONTROL.search(text):
        return text
    return '"' + escape(text).replace('"', '\\"') + '"'


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        # ensure_ascii (the default) writes every control character and U+2028/2029 as \uXXXX.
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...` with the record's structured fields, on one line
    whatever they hold; a traceback follows on lines of its own."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record).items()
        extra = " ".join(f"{escape(k)}={_logfmt_value(v)}" for k, v in fields if v is not None)
        line = escape(f"{record.levelname} {record.name}: {record.getMessage()}")
        text = f"{line} {extra}" if extra else line
        if record.exc_info:
            # Multi-line, as Python writes it, but each line escaped and indented: an
            # exception's message may quote a caller, and only a record starts a line.
            traceback = self.formatException(record.exc_info).split("\n")
            text += "".join("\n  " + escape(part) for part in traceback)
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
    # The message's path percent-encoded (`%` too, so it decodes back exactly): one word with
    # no space, quote or `=` in it, so `GET /x%20200 404` cannot read as a status of 200 nor
    # add a field. Quoting it instead would leave its `=` for a logfmt reader to split on, and
    # a URL reads naturally encoded. The `path` field holds it decoded.
    access_logger.info(
        "%s %s %s %.1f ms",
        safe["method"],
        quote(str(safe["path"]), safe=_PATH_SAFE),
        safe["status"],
        safe["duration_ms"],
        extra=safe,
    )
