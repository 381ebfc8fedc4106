"""Settings: the only code that reads the `SNAPGRAPH_*` variables (OpenTelemetry's `OTEL_*`
are tracing.py's, prometheus_client's multiprocess directory metrics_exposition.py's).

Every setting is a field of `Settings`, read from `SNAPGRAPH_<NAME>` and settable by the
matching CLI flag `--<name-with-dashes>`. The field's metadata is the single source of its
help text, so the CLI, the README and the error messages cannot drift apart.

    >>> Settings.from_environ({"SNAPGRAPH_PORT": "9000"}).port
    9000
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from snapgraph.errors import ConfigError
from snapgraph.redis_url import RedisUrlError, parse_redis_url

ENV_PREFIX = "SNAPGRAPH_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
FEDERATION_VERSIONS = tuple(f"2.{minor}" for minor in range(12))


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _secret_setting(default: Any, help: str) -> Any:
    """A setting that may hold a secret: left out of `repr(settings)` (a debugger, an error
    tracker that records locals, a careless log line)."""
    return field(default=default, metadata={"help": help}, repr=False)


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration. Build it with `Settings.from_environ(os.environ)`."""

    host: str = _setting("127.0.0.1", "Interface to listen on.")
    port: int = _setting(8000, "TCP port to listen on.")
    log_level: str = _setting("info", "One of critical, error, warning, info, debug.")
    log_format: str = _setting(
        "text", "text (for a terminal) or json (one object per line, for a log pipeline)."
    )
    shutdown_delay: float = _setting(
        5.0,
        "Seconds after SIGTERM during which /readyz answers 503 while requests are still "
        "served, so load balancers stop sending before the server stops accepting.",
    )
    drain_timeout: float = _setting(
        20.0, "Seconds in-flight requests get to finish once the server stops accepting."
    )
    upstream_url: str | None = _setting(
        None,
        "Base URL of the snapshots REST service (the part before /v1/snapshots). "
        "Unset: serve starts the built-in reference upstream with demo data.",
    )
    upstream_timeout: float = _setting(
        5.0, "Seconds to wait for the upstream's answer (read/write timeout)."
    )
    upstream_connect_timeout: float = _setting(2.0, "Seconds to wait for a TCP/TLS connection.")
    upstream_deadline: float = _setting(
        8.0,
        "Seconds one upstream fetch may take in all: connection, headers and the whole body "
        "(an upstream that drips its body never holds a connection longer).",
    )
    upstream_retries: int = _setting(
        2,
        "Retries of a fetch after a refused connection or a 502/503/504, with jittered "
        "backoff (or Retry-After), within the fetch deadline. 0 turns them off.",
    )
    upstream_retry_backoff: float = _setting(
        0.1, "Seconds before the first retry; doubled for each next one (jittered ±50%)."
    )
    upstream_breaker_failures: int = _setting(
        5,
        "Failed fetches in a row that open the circuit breaker: callers then fail fast (stale "
        "answers served where cached) until one probe succeeds.",
    )
    upstream_breaker_reset: float = _setting(
        5.0, "Seconds an open breaker waits before it lets one probe through."
    )
    upstream_max_body_bytes: int = _setting(
        64 << 20,
        "Largest upstream answer read, in bytes; a larger one is UPSTREAM_BAD_RESPONSE. A "
        "contract item weighs about 400 bytes: 10,000 items about 4 MB, 100,000 about 40 MB.",
    )
    upstream_pool_timeout: float = _setting(
        1.0, "Seconds to wait for a free pooled connection before answering UPSTREAM_UNAVAILABLE."
    )
    upstream_max_connections: int = _setting(100, "Size of the upstream connection pool.")
    upstream_trust_env: bool = _setting(
        False, "Honour HTTP(S)_PROXY, NO_PROXY and SSL_CERT_FILE from the environment."
    )
    cache_url: str = _secret_setting(
        "memory://",
        "memory:// (in-process), or a Redis shared by every gateway process: "
        "redis://[[user]:password@]host:port/db (one node), "
        "redis+cluster://[[user]:password@]host:port,host:port (Redis Cluster seed nodes) or "
        "redis+sentinel://[[user]:password@]host:port,host:port/service/db (Sentinel); "
        "rediss... for TLS.",
    )
    cache_secret: str | None = _secret_setting(
        None,
        "HMAC secret for cache keys. Required with Redis (the same on every replica); "
        "random per process otherwise. Prefer SNAPGRAPH_CACHE_SECRET_FILE: a value in the "
        "environment or on the command line is visible to more of the system.",
    )
    cache_secret_file: str | None = _setting(
        None,
        "File whose content (trailing newline removed) is the cache secret, e.g. a mounted "
        "Kubernetes Secret. Set this or SNAPGRAPH_CACHE_SECRET, not both.",
    )
    cache_timeout: float = _setting(
        0.5,
        "Seconds each wait on Redis may take (a command may retry, up to four times this); "
        "past it the gateway serves from its in-process cache and tries Redis again a second "
        "later. A request that meets a Redis hanging mid-request may wait twice that.",
    )
    cache_ttl: float = _setting(
        30.0, "Seconds an upstream answer is served from cache. 0 turns caching off."
    )
    cache_stale_window: float = _setting(
        300.0,
        "Seconds past the TTL an entry is kept to be served (flagged stale) when upstream fails.",
    )
    cache_max_entries: int = _setting(
        10_000, "Most entries the in-process cache holds; least recently used go first."
    )
    cache_max_bytes: int = _setting(
        128 << 20,
        "Most bytes the in-process cache holds (entries' JSON text); least recently used go "
        "first. Decoded entries for fast hits, and the sorted views pages are cut from, "
        "take about a third of it more.",
    )
    response_cache_max_bytes: int = _setting(
        32 << 20,
        "Most bytes of serialized answers kept for repeated operations (same caller, "
        "document, variables, upstream answer). 0 turns it off.",
    )
    federation_version: str = _setting("2.11", "Apollo Federation version of the subgraph SDL.")
    graphiql: bool = _setting(True, "Serve the GraphiQL explorer at GET /graphql.")
    metrics: bool = _setting(True, "Serve Prometheus metrics at GET /metrics.")
    metrics_port: int = _setting(
        0,
        "Port on the same host that serves the metrics alone; the main port then answers 404 "
        "at /metrics. 0: /metrics on the main port.",
    )
    workers: int = _setting(
        1,
        "Processes `snapgraph serve` runs on the one port (each with its own cache and "
        "breaker); their metrics are summed.",
    )
    cors_origins: tuple[str, ...] = _setting(
        (), "Comma-separated origins allowed by CORS (exact match; none by default)."
    )
    apq_max_entries: int = _setting(
        10_000, "Most automatic persisted queries remembered (LRU). 0 turns APQ off."
    )
    apq_max_bytes: int = _setting(
        16 << 20,
        "Most bytes of documents the APQ store holds in all (least recently used go first).",
    )
    apq_max_document_bytes: int = _setting(
        32 << 10,
        "Largest document APQ registers; a larger one still runs when sent in full.",
    )
    safelist_file: str | None = _setting(
        None,
        "JSON file of registered documents (snapgraph register). When set, only those run; "
        "documents match after normalization (whitespace, commas and comments do not count).",
    )
    safelist_allow_federation: bool = _setting(
        False,
        "With a safelist, also admit a federation router's own queries "
        "(_service { sdl } and _entities), so the subgraph can be composed and queried.",
    )
    introspection: bool = _setting(
        True, "Answer introspection (__schema, __type). Off: INTROSPECTION_DISABLED."
    )
    max_depth: int = _setting(
        20, "Deepest selection nesting a document may have, introspection levels included."
    )
    max_aliases: int = _setting(50, "Most aliases a document may use, fragments expanded.")
    max_selections: int = _setting(
        2_000, "Most field selections a document may have once its fragments are expanded."
    )
    max_tokens: int = _setting(
        5_000,
        "Most lexical tokens a document may have; a caller without a credential, who can "
        "only ask for schema fields, at most 1,000 (GraphiQL's introspection query has 200).",
    )
    max_document_chars: int = _setting(
        32_768,
        "Most characters a document may have, comments and strings included: refused "
        "before it is parsed (MAX_DOCUMENT_SIZE_LIMIT).",
    )
    max_representations: int = _setting(
        5_000, "Most _entities representations one federation request may send."
    )
    max_result_values: int = _setting(
        300_000,
        "Most leaf values one response may hold (list items times selected fields, summed "
        "over every alias); a request over it gets MAX_RESULT_VALUES_LIMIT before anything "
        "is built.",
    )
    max_response_bytes: int = _setting(
        32 << 20,
        "Most bytes of one serialized answer (the result budget counts values, not their "
        "length: long names make long answers); over it the caller gets "
        "MAX_RESPONSE_BYTES_LIMIT instead of an answer held in memory.",
    )
    max_page_size: int = _setting(
        100,
        "Most items one page of snapshotsConnection may hold: `first` or `last` above it is "
        "BAD_USER_INPUT; a page that gives neither holds this many.",
    )

    max_list_items: int = _setting(
        100,
        "Most items of any list a request's variables or arguments carry (filter lists); "
        "checked on the raw request before anything is converted: BAD_USER_INPUT.",
    )
    max_string_length: int = _setting(
        4_096,
        "Most characters of any string a request's variables carry (names, ids, cursors); "
        "checked on the raw request before anything is converted: BAD_USER_INPUT.",
    )
    http_header_timeout: float = _setting(
        10.0,
        "Seconds a client has to send a request's line and headers once it has started one; "
        "then the connection is closed.",
    )
    http_body_timeout: float = _setting(
        30.0,
        "Seconds a client has to send a request's whole body once its headers are in: "
        "408 after that.",
    )
    http_keepalive_timeout: float = _setting(
        5.0, "Seconds an idle keep-alive connection stays open between requests."
    )
    http_max_header_bytes: int = _setting(
        32 << 10,
        "Most bytes of a request's line and headers together: 431 and the connection closed.",
    )
    http_max_connections: int = _setting(
        1_000,
        "Most connections (and requests in progress) one process serves at once; beyond "
        "it new requests get 503.",
    )
    http_max_connections_per_client: int = _setting(
        100,
        "Most connections one client address may hold open at once in one process; a "
        "connection beyond it is closed as soon as it opens. 0 turns it off. Behind a proxy "
        "every connection comes from the proxy's address: 0, or above its connection count.",
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `SNAPGRAPH_*` from `environ` (default `os.environ`); `overrides` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in dataclasses.fields(cls):
            raw = environ.get(env_name(setting.name))
            if raw is not None:
                values[setting.name] = _parse(setting, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("cache_secret_file"):
            values["cache_secret"] = _secret_from_file(values)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise `ConfigError` naming the first setting whose value cannot work."""
        for name, check, problem in _CHECKS:
            if not check(getattr(self, name)):
                raise ConfigError(env_name(name), problem, getattr(self, name))
        _check_upstream_url(self.upstream_url)  # apart: its message masks a password
        _check_cache_url(self.cache_url)  # likewise
        if self.uses_redis and not self.cache_secret:
            raise ConfigError(
                env_name("cache_secret"),
                "must be set when the cache is Redis (use the same value on every replica)",
                None,
            )

    @property
    def uses_redis(self) -> bool:
        return self.cache_url != "memory://"


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


# The project's own test and benchmark variables: not settings, and not mistakes.
_NOT_SETTINGS = (f"{ENV_PREFIX}TEST_", f"{ENV_PREFIX}BENCH_")


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Each `SNAPGRAPH_*` variable that names no setting, with the closest one's name (compared
    without the prefix they all share, which would make any two names look alike). The
    project's own test and benchmark variables (`SNAPGRAPH_TEST_*`, `SNAPGRAPH_BENCH_*`) are
    not settings and not mistakes."""
    known = {
        setting.name.upper(): env_name(setting.name) for setting in dataclasses.fields(Settings)
    }
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in known.values()
        and not name.startswith(_NOT_SETTINGS)
    )
    return [(name, _closest(name.removeprefix(ENV_PREFIX), known)) for name in unknown]


def _closest(suffix: str, known: dict[str, str]) -> str | None:
    matches = difflib.get_close_matches(suffix, list(known), n=1, cutoff=0.75)
    return known[matches[0]] if matches else None


def _parse(setting: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(setting.type)
    parser = _PARSERS.get(kind.replace(" | None", ""), str)
    try:
        return parser(raw.strip())
    except ValueError:
        raise ConfigError(env_name(setting.name), f"must be {_KIND_NAMES[kind]}", raw) from None


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "tuple[str, ...]": _parse_list,
}
_KIND_NAMES = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "tuple[str, ...]": "a comma-separated list",
    "str": "text",
    "str | None": "text",
}


def _check_upstream_url(url: str | None) -> None:
    """Refuse an upstream URL that cannot work, never printing a secret it may carry."""
    if url is None:
        return
    problem = _upstream_url_problem(url)
    if problem is not None:
        raise ConfigError(env_name("upstream_url"), problem, _without_secrets(url))


def _upstream_url_problem(url: str) -> str | None:
    if "@" in url:
        # Credentials in the URL would be sent with every caller's request, whoever they are;
        # the gateway forwards each caller's own Authorization / X-API-Key instead. Any "@"
        # counts: a password with an unescaped / ? or # puts its "@" past the host.
        return "must not carry user:password@ (callers send their own credentials)"
    try:
        parts = urlsplit(url)
        _ = parts.port  # read for its ValueError: a port out of range, or not a number
    except ValueError:
        return "must be a valid http:// or https:// URL"
    if parts.query or parts.fragment:
        # httpx appends /v1/snapshots after a query (`?k=1/v1/snapshots`) and sends a
        # fragment as is: the URL would not reach the API the operator meant.
        return "must not have a ?query or #fragment (only scheme, host, port and path)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


def _without_secrets(url: str) -> str | None:
    """The URL as an error may print it: user, password, query and fragment masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # cannot tell its secrets from the rest: print nothing
    _, at, host = parts.netloc.rpartition("@")
    if url.count("@") != parts.netloc.count("@"):
        return None  # an "@" past the host: a password with an unescaped / ? or #
    return urlunsplit(
        (
            parts.scheme,
            "***@" + host if at else host,
            parts.path,
            "***" if parts.query else "",
            "***" if parts.fragment else "",
        )
    )


def _check_cache_url(url: str) -> None:
    if url == "memory://":
        return
    try:
        parse_redis_url(url)
    except RedisUrlError as exc:
        problem = f"must be memory:// or a Redis URL: {exc}"
        # Not even masked: the URL may hold a password in a place the parser could not tell.
        raise ConfigError(env_name("cache_url"), problem, None) from None


def _secret_from_file(values: dict[str, Any]) -> str:
    """The secret a file holds; read here so that every later check sees it."""
    path = values["cache_secret_file"]
    if values.get("cache_secret"):
        raise ConfigError(
            env_name("cache_secret_file"), "is set together with SNAPGRAPH_CACHE_SECRET", path
        )
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot be read ({type(exc).__name__})"
        raise ConfigError(env_name("cache_secret_file"), problem, path) from None
    if not secret:
        raise ConfigError(env_name("cache_secret_file"), "names an empty file", path)
    return secret


def _is_origin(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path == ""


_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("port", lambda v: 0 <= v <= 65535, "must be a port number from 0 to 65535"),
    ("metrics_port", lambda v: 0 <= v <= 65535, "must be a port number from 0 to 65535"),
    ("workers", lambda v: v >= 1, "must be at least 1"),
    ("log_level", lambda v: v in LOG_LEVELS, "must be one of " + ", ".join(LOG_LEVELS)),
    ("log_format", lambda v: v in ("text", "json"), "must be text or json"),
    ("shutdown_delay", lambda v: v >= 0, "must be 0 or a number of seconds"),
    ("drain_timeout", lambda v: v >= 0, "must be 0 or a number of seconds"),
    ("upstream_timeout", lambda v: v > 0, "must be a number of seconds above 0"),
    ("upstream_connect_timeout", lambda v: v > 0, "must be a number of seconds above 0"),
    ("upstream_deadline", lambda v: v > 0, "must be a number of seconds above 0"),
    ("upstream_retries", lambda v: 0 <= v <= 10, "must be from 0 to 10"),
    ("upstream_retry_backoff", lambda v: v >= 0, "must be 0 or a number of seconds"),
    ("upstream_breaker_failures", lambda v: v >= 1, "must be at least 1"),
    ("upstream_breaker_reset", lambda v: v > 0, "must be a number of seconds above 0"),
    ("upstream_pool_timeout", lambda v: v > 0, "must be a number of seconds above 0"),
    ("upstream_max_connections", lambda v: v >= 1, "must be at least 1"),
    (
        "upstream_max_body_bytes",
        lambda v: v >= 1 << 16,
        "must be at least 65536 (64 KiB)",
    ),
    ("cache_ttl", lambda v: v >= 0, "must be 0 (off) or a number of seconds"),
    ("cache_timeout", lambda v: 0 < v <= 60, "must be a number of seconds above 0, 60 at most"),
    ("cache_stale_window", lambda v: v >= 0, "must be 0 (off) or a number of seconds"),
    ("cache_max_entries", lambda v: v >= 1, "must be at least 1"),
    ("cache_max_bytes", lambda v: v >= 1 << 20, "must be at least 1048576 (1 MiB)"),
    ("response_cache_max_bytes", lambda v: v >= 0, "must be 0 (off) or a number of bytes"),
    (
        "federation_version",
        lambda v: v in FEDERATION_VERSIONS,
        "must be one of " + ", ".join(FEDERATION_VERSIONS),
    ),
    ("cors_origins", lambda v: all(map(_is_origin, v)), "must be origins like https://app.example"),
    ("apq_max_entries", lambda v: v >= 0, "must be 0 (off) or a positive number"),
    ("apq_max_bytes", lambda v: v >= 0, "must be 0 or a number of bytes"),
    ("apq_max_document_bytes", lambda v: v >= 0, "must be 0 or a number of bytes"),
    ("max_depth", lambda v: v >= 1, "must be at least 1"),
    ("max_aliases", lambda v: v >= 0, "must be 0 or more"),
    ("max_selections", lambda v: v >= 1, "must be at least 1"),
    ("max_tokens", lambda v: v >= 1, "must be at least 1"),
    ("max_document_chars", lambda v: v >= 1024, "must be at least 1024"),
    ("max_representations", lambda v: v >= 1, "must be at least 1"),
    ("max_result_values", lambda v: v >= 1, "must be at least 1"),
    ("max_page_size", lambda v: v >= 1, "must be at least 1"),
    ("max_response_bytes", lambda v: v >= 1 << 16, "must be at least 65536"),
    ("max_list_items", lambda v: v >= 1, "must be at least 1"),
    ("max_string_length", lambda v: v >= 64, "must be at least 64"),
    ("http_header_timeout", lambda v: v > 0, "must be a number of seconds above 0"),
    ("http_body_timeout", lambda v: v > 0, "must be a number of seconds above 0"),
    ("http_keepalive_timeout", lambda v: v > 0, "must be a number of seconds above 0"),
    ("http_max_header_bytes", lambda v: v >= 4096, "must be at least 4096"),
    ("http_max_connections", lambda v: v >= 1, "must be at least 1"),
    ("http_max_connections_per_client", lambda v: v >= 0, "must be 0 (off) or more"),
)
