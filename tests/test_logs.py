"""`snapgraph serve` logs: with `--log-format json` every line is a JSON object, and each
request gets one access line naming its request id and operation, without any credential; in
either format what a caller sends cannot start a line of its own or reach the terminal as an
escape sequence."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from conftest import Upstream, clean_environ, first_answer, free_port
from snapgraph.logs import JsonFormatter, TextFormatter, log_access

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

# A strict logfmt reader, as a log pipeline runs one over a text line: pairs are `key=bare` or
# `key="quoted"` (`\"`, `\\` and the formatter's control escapes inside), separated by
# whitespace; words without `=` (the level, the logger, the message) are keys with no value.
_PAIR = re.compile(r'\s*([^\s="]+)(?:=("(?:[^"\\]|\\.)*"|[^\s="]*))?(?=\s|$)')
_ESCAPED = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)")
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def logfmt(line: str) -> tuple[list[str], dict[str, str]]:
    """The bare words of `line` and its `key=value` pairs, each key at most once."""
    words: list[str] = []
    pairs: dict[str, str] = {}
    at = 0
    while at < len(line):
        match = _PAIR.match(line, at)
        assert match, f"not logfmt from {at}: {line!r}"
        key, value, at = match[1], match[2], match.end()
        if value is None:
            words.append(key)
            continue
        assert key not in pairs, f"{key} twice: {line!r}"
        pairs[key] = _unquoted(value)
    return words, pairs


def _unquoted(value: str) -> str:
    if not value.startswith('"'):
        return value
    return _ESCAPED.sub(
        lambda m: _UNESCAPED[m[1]] if len(m[1]) == 1 else chr(int(m[1][1:], 16)), value[1:-1]
    )


def served_log(
    upstream: Upstream, tmp_path: Path, log_format: str, send: Callable[[str], None]
) -> str:
    """What `snapgraph serve --log-format=LOG_FORMAT` writes while `send(url)` runs."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snapgraph",
                "serve",
                f"--port={port}",
                f"--log-format={log_format}",
            ],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            # Tracing on (spans to stdout), so that access lines carry the trace id.
            env=clean_environ(SNAPGRAPH_UPSTREAM_URL=upstream.url, OTEL_TRACES_EXPORTER="console"),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            first_answer(lambda: httpx.get(url + "/livez"), process)
            send(url)
        finally:
            process.terminate()
            process.wait(timeout=20)
    return log.read_text()


def test_json_logs_carry_one_access_line_per_request_and_no_credential(
    upstream: Upstream, tmp_path: Path
) -> None:
    def send(url: str) -> None:
        for request_id in ("req-1", "req-2"):
            answer = httpx.post(
                url + "/graphql",
                json={"query": "query Mine { snapshots { id } }"},
                headers={
                    "X-API-Key": "demo-alice-key",
                    "X-Request-ID": request_id,
                    "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                },
            )
            assert answer.status_code == 200
        httpx.post(url + "/graphql", json={"query": "{ nope }"}, headers={"X-Request-ID": "bad"})

    text = served_log(upstream, tmp_path, "json", send)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    access = {line["request_id"]: line for line in lines if line["logger"] == "snapgraph.access"}
    first, second = access["req-1"], access["req-2"]
    assert (first["status"], first["operation_name"], first["operation_type"]) == (
        200,
        "Mine",
        "query",
    )
    assert (first["answered_by"], second["answered_by"]) == ("compiled", "cached")
    assert access["bad"]["error_codes"] == ["GRAPHQL_VALIDATION_FAILED"]
    # The first request fetched (and says what the upstream answered, and how fast); the
    # second was a cache hit with no upstream call.
    assert (first["cache"], first["upstream_status"]) == ("miss", 200)
    assert first["upstream_ms"] > 0
    assert (second["cache"], second["upstream_status"], second["upstream_ms"]) == (
        "hit",
        None,
        None,
    )
    assert first["trace_id"] == second["trace_id"] == TRACE_ID  # the caller's trace, continued
    assert "demo-alice-key" not in text
    # uvicorn's records carry a copy of their message with terminal colours: never written.
    assert not [line for line in lines if "color_message" in line]


# A path that, written raw, would end the access line, forge one of its own and erase the
# terminal's line (ESC [2K); uvicorn decodes it before the gateway sees it.
FORGED_PATH = "/graphql%0aINFO%20snapgraph.access:%20GET%20/admin%20200%201.0%20ms%1b[2K"
FORGED_LINE = "INFO snapgraph.access: GET /admin"
# A path that, written bare into `path=`, would be followed by fields of the caller's choosing.
FORGED_FIELDS_PATH = (
    "/x%20status=200%20operation_name=AdminExport%20request_id=req-of-bob%20cache=hit"
)


def test_text_logs_escape_what_a_caller_sends_and_hold_no_escape_sequence(
    upstream: Upstream, tmp_path: Path
) -> None:
    def send(url: str) -> None:
        headers = {"X-Request-ID": "forger"}
        assert httpx.get(url + FORGED_PATH, headers=headers).status_code == 404
        # U+2028 and NEL (U+0085) end a line in some viewers.
        assert httpx.get(url + "/x%E2%80%A8y%C2%85z%7F", headers=headers).status_code == 404
        assert httpx.get(url + FORGED_FIELDS_PATH, headers=headers).status_code == 404

    text = served_log(upstream, tmp_path, "text", send)
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(FORGED_LINE)], text
    assert "\x1b" not in text and "\u2028" not in text and "\x85" not in text
    access = [logfmt(line) for line in lines if line.startswith("INFO snapgraph.access: ")]
    forged = [(words, pairs) for words, pairs in access if pairs["request_id"] == "forger"]
    assert [pairs["path"] for _, pairs in forged] == [
        "/graphql\nINFO snapgraph.access: GET /admin 200 1.0 ms\x1b[2K",
        "/x\u2028y\x85z\x7f",
        unquote(FORGED_FIELDS_PATH),
    ]
    assert 'path="/graphql\\nINFO snapgraph.access: GET /admin 200 1.0 ms\\x1b[2K"' in text
    for words, pairs in forged:
        # Only the fields the gateway wrote, and its status, in the message and in the fields.
        assert set(pairs) == {"request_id", "method", "path", "status", "duration_ms"}
        assert (pairs["method"], pairs["status"]) == ("GET", "404")
        assert words[2:] == ["GET", words[3], "404", words[5], "ms"]
        assert unquote(words[3]) == pairs["path"]
    # uvicorn's "Uvicorn running on ..." comes without its coloured copy.
    assert "color_message" not in text


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": msg, "args": args})
    record.__dict__.update(extra)
    if exc:
        try:
            raise ValueError("bad\x1b[31m value\nINFO t: forged")
        except ValueError:
            record.exc_info = sys.exc_info()
    return record


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\n", "\\n"),
        ("\r", "\\r"),
        ("\t", "\\t"),
        ("\x00", "\\x00"),
        ("\x1b", "\\x1b"),
        ("\x7f", "\\x7f"),
        ("\x85", "\\x85"),
        ("\x9b", "\\x9b"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ],
)
def test_text_lines_escape_control_characters_in_the_message_and_every_field(
    char: str, shown: str
) -> None:
    record = _record("got %s", f"a{char}b", path=f"/p{char}q", codes=[f"c{char}"])
    line = TextFormatter().format(record)
    # The list's text is its repr, which writes the character as an escape of its own.
    in_repr = shown.replace("\\", "\\\\")
    assert line == f'INFO t: got a{shown}b path="/p{shown}q" codes="[\'c{in_repr}\']"'
    assert logfmt(line)[1] == {"path": f"/p{char}q", "codes": str([f"c{char}"])}


def test_text_tracebacks_stay_multi_line_without_escape_sequences() -> None:
    text = TextFormatter().format(_record("failed\n", exc=True))
    first, *rest = text.split("\n")
    assert first == "INFO t: failed\\n"
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-2:] == ["  ValueError: bad\\x1b[31m value", "  INFO t: forged"]
    assert all(line.startswith("  ") for line in rest)  # only a record starts a line
    assert "\x1b" not in text


def test_neither_format_writes_uvicorns_coloured_copy_of_a_message() -> None:
    coloured = "\x1b[1mUvicorn running\x1b[0m"
    record = _record("Uvicorn running", color_message=coloured)
    assert TextFormatter().format(record) == "INFO t: Uvicorn running"
    assert "color_message" not in json.loads(JsonFormatter().format(record))


def test_json_lines_escape_control_characters_and_line_separators() -> None:
    line = JsonFormatter().format(_record("a\nb\x1b\u2028\x85", path="/\u2029"))
    assert line.isascii() and "\n" not in line
    entry = json.loads(line)
    assert (entry["message"], entry["path"]) == ("a\nb\x1b\u2028\x85", "/\u2029")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain-value_1.0", "plain-value_1.0"),
        (404, "404"),
        ("", '""'),
        ("a b", '"a b"'),
        ("a=b", '"a=b"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ('a\\" b=c', '"a\\\\\\" b=c"'),
        ("a\nb", '"a\\nb"'),
        ("a\u00a0b", '"a\u00a0b"'),  # whitespace to a reader that splits on any
    ],
)
def test_text_field_values_are_bare_or_quoted_as_logfmt(value: object, shown: str) -> None:
    line = TextFormatter().format(_record("m", key=value, after="x"))
    assert line == f"INFO t: m key={shown} after=x"
    assert logfmt(line) == (["INFO", "t:", "m"], {"key": str(value), "after": "x"})


def test_text_lines_show_a_literal_backslash_apart_from_an_escaped_newline() -> None:
    literal, newline = (TextFormatter().format(_record(m)) for m in ("a\\nb", "a\nb"))
    assert (literal, newline) == ("INFO t: a\\\\nb", "INFO t: a\\nb")


@pytest.mark.parametrize(
    "path",
    [
        unquote(FORGED_FIELDS_PATH),
        '/x" status=200 cache="hit',
        '/x\\" status=200',
        "/x\u00a0status=200\u3000cache=hit",
        "/x\tstatus=200",
        "/x=y/%20/\\n",
    ],
)
def test_an_access_line_holds_only_the_real_fields_whatever_the_path(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="snapgraph.access"):
        log_access(
            {
                "request_id": "req-1",
                "method": "GET",
                "path": path,
                "status": 404,
                "duration_ms": 1.5,
            }
        )
    words, pairs = logfmt(TextFormatter().format(caplog.records[-1]))
    assert pairs == {
        "request_id": "req-1",
        "method": "GET",
        "path": path,
        "status": "404",
        "duration_ms": "1.5",
    }
    # The message too: one word for the path, which decodes to it, between the method and status.
    assert words == ["INFO", "snapgraph.access:", "GET", words[3], "404", "1.5", "ms"]
    assert unquote(words[3]) == path
