from __future__ import annotations

import pytest

from snapgraph.errors import ConfigError
from snapgraph.settings import Settings


def test_defaults_serve_locally_with_an_in_process_cache() -> None:
    settings = Settings.from_environ({})
    assert (settings.host, settings.port, settings.cache_url) == ("127.0.0.1", 8000, "memory://")
    assert settings.upstream_timeout < 20


def test_environment_variables_are_parsed_by_type() -> None:
    settings = Settings.from_environ(
        {
            "SNAPGRAPH_PORT": "9001",
            "SNAPGRAPH_UPSTREAM_TIMEOUT": "2.5",
            "SNAPGRAPH_GRAPHIQL": "off",
            "SNAPGRAPH_CORS_ORIGINS": "https://a.example, https://b.example",
            "SNAPGRAPH_UPSTREAM_URL": "https://sandbox.example/api",
        }
    )
    assert settings.port == 9001 and settings.upstream_timeout == 2.5
    assert settings.graphiql is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SNAPGRAPH_PORT": "eighty"}, "SNAPGRAPH_PORT must be a whole number (got 'eighty')"),
        ({"SNAPGRAPH_PORT": "70000"}, "SNAPGRAPH_PORT must be a port number"),
        ({"SNAPGRAPH_UPSTREAM_URL": "ftp://x"}, "SNAPGRAPH_UPSTREAM_URL must be an http"),
        (
            {"SNAPGRAPH_UPSTREAM_TIMEOUT": "0"},
            "SNAPGRAPH_UPSTREAM_TIMEOUT must be a number of seconds above 0",
        ),
        ({"SNAPGRAPH_CACHE_TTL": "-1"}, "SNAPGRAPH_CACHE_TTL must be 0 (off)"),
        ({"SNAPGRAPH_GRAPHIQL": "maybe"}, "SNAPGRAPH_GRAPHIQL must be true or false"),
        ({"SNAPGRAPH_CORS_ORIGINS": "*"}, "SNAPGRAPH_CORS_ORIGINS must be origins"),
        ({"SNAPGRAPH_FEDERATION_VERSION": "1.0"}, "SNAPGRAPH_FEDERATION_VERSION must be one of"),
    ],
)
def test_a_bad_setting_names_itself_and_the_problem(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(environ)
    assert str(caught.value).startswith(message)


def test_redis_cache_requires_a_secret_without_echoing_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"SNAPGRAPH_CACHE_URL": "redis://:hunter2@cache:6379/0"})
    assert caught.value.setting == "SNAPGRAPH_CACHE_SECRET"
    assert "hunter2" not in str(caught.value)


def test_a_redis_url_with_a_non_numeric_database_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(
            {"SNAPGRAPH_CACHE_URL": "redis://cache/zero", "SNAPGRAPH_CACHE_SECRET": "s"}
        )
    assert caught.value.setting == "SNAPGRAPH_CACHE_URL"


@pytest.mark.parametrize(
    "url",
    [
        "http://svc:hunter2@upstream.internal",
        "https://hunter2@upstream.internal/api",  # a token as the user name
        "http://svc:hunter2@upstream.internal?x=1",
        "http://svc:h/unter2@upstream.internal",  # an unescaped / puts the "@" in the path
        "http://svc:h#unter2@upstream.internal",
        "http://svc:hunter2@[::1",  # not even a valid URL
    ],
)
def test_an_upstream_url_with_credentials_is_refused_without_printing_them(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"SNAPGRAPH_UPSTREAM_URL": url})
    message = str(caught.value)
    assert message.startswith("SNAPGRAPH_UPSTREAM_URL must not carry user:password@")
    assert "hunter2" not in message and "unter2" not in message
    assert "\n" not in message


def test_a_refused_upstream_url_is_shown_with_its_credentials_masked() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"SNAPGRAPH_UPSTREAM_URL": "http://svc:hunter2@upstream.internal"})
    assert str(caught.value).endswith("(got 'http://***@upstream.internal')")


@pytest.mark.parametrize(
    "url", ["https://upstream.internal/api?token=hunter2", "https://upstream.internal/#hunter2"]
)
def test_an_upstream_url_with_a_query_or_fragment_is_refused_masked(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"SNAPGRAPH_UPSTREAM_URL": url})
    message = str(caught.value)
    assert message.startswith("SNAPGRAPH_UPSTREAM_URL must not have a ?query or #fragment")
    assert "hunter2" not in message and "***" in message


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://upstream.internal:99999", "http://upstream.internal:port"]
)
def test_an_unparseable_upstream_url_is_a_config_error_not_a_crash(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"SNAPGRAPH_UPSTREAM_URL": url})
    assert str(caught.value).startswith("SNAPGRAPH_UPSTREAM_URL must be a valid http://")


@pytest.mark.parametrize(
    "url", ["https://sandbox.example/api", "http://127.0.0.1:9000", "http://[::1]:9000/"]
)
def test_a_plain_upstream_url_is_accepted(url: str) -> None:
    assert Settings.from_environ({"SNAPGRAPH_UPSTREAM_URL": url}).upstream_url == url
