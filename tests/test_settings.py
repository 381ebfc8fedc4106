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
        (
            {"SNAPGRAPH_CACHE_TIMEOUT": "0"},
            "SNAPGRAPH_CACHE_TIMEOUT must be a number of seconds above 0",
        ),
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


@pytest.mark.parametrize(
    ("url", "topology", "nodes", "service", "db", "tls"),
    [
        ("redis://cache:6380/2", "node", (("cache", 6380),), None, 2, False),
        ("rediss://cache", "node", (("cache", 6379),), None, 0, True),
        (
            "redis+cluster://:pw@a:7000,b:7001,c",
            "cluster",
            (("a", 7000), ("b", 7001), ("c", 6379)),
            None,
            0,
            False,
        ),
        (
            "rediss+sentinel://s1:26379,s2:26380/cache-main/3",
            "sentinel",
            (("s1", 26379), ("s2", 26380)),
            "cache-main",
            3,
            True,
        ),
        ("redis://[::1]:6379/0", "node", (("::1", 6379),), None, 0, False),
        ("redis://[::1]/1", "node", (("::1", 6379),), None, 1, False),
        ("redis+cluster://a:1, b:2", "cluster", (("a", 1), ("b", 2)), None, 0, False),
    ],
)
def test_cache_urls_name_a_node_a_cluster_or_a_sentinel_setup(
    url: str, topology: str, nodes: tuple, service: str | None, db: int, tls: bool
) -> None:
    from snapgraph.redis_url import parse_redis_url

    settings = Settings.from_environ({"SNAPGRAPH_CACHE_URL": url, "SNAPGRAPH_CACHE_SECRET": "s"})
    target = parse_redis_url(settings.cache_url)
    assert (target.topology, target.nodes, target.service, target.db, target.tls) == (
        topology,
        nodes,
        service,
        db,
        tls,
    )


def test_the_password_of_a_cache_url_reaches_redis_unescaped() -> None:
    from snapgraph.redis_url import parse_redis_url

    target = parse_redis_url("redis+cluster://ops:p%40ss%2Cword@a:7000,b:7001")
    assert (target.username, target.password) == ("ops", "p@ss,word")
    assert parse_redis_url("redis://hunter2@cache").password == "hunter2"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://cache:abc/0", "host:port"),
        ("redis://cache:\u00b2", "host:port"),  # a digit to str.isdigit, not to int's users
        ("redis://cache/\u0663", "database number"),
        ("redis://::1", "host:port"),  # an IPv6 address needs brackets
        ("redis://:hunter2@[::1", "host:port"),
        ("redis://[h]x:1", "host:port"),
        ("redis://ca che:1", "host:port"),
        ("redis://:hunter2@cache:99999/0", "port from 1 to 65535"),
        ("redis://a:1,b:2/0", "one host"),
        ("redis+sentinel://:hunter2@s1:26379", "service name"),
        ("redis+cluster://:hunter2@a:7000/1", "database 0 only"),
        ("redis://:hunter2@cache/0?timeout=1", "?query"),
        ("redis+cluster://:hunter2@a:7000/x/y", "database number"),
        ("valkey://:hunter2@cache", "scheme"),
    ],
)
def test_a_cache_url_that_cannot_work_is_refused_at_startup_without_its_password(
    url: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"SNAPGRAPH_CACHE_URL": url, "SNAPGRAPH_CACHE_SECRET": "s"})
    assert caught.value.setting == "SNAPGRAPH_CACHE_URL"
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("setting", ["SNAPGRAPH_CACHE_SECRET", "SNAPGRAPH_CACHE_URL"])
def test_the_cache_secret_and_url_are_never_printed_in_an_error(setting: str) -> None:
    error = ConfigError(setting, "cannot work", "redis://:hunter2@cache.internal/0")
    assert str(error) == f"{setting} cannot work"
    # Every other setting shows what it got.
    other = ConfigError("SNAPGRAPH_CACHE_TTL", "cannot work", "hunter2")
    assert str(other) == "SNAPGRAPH_CACHE_TTL cannot work (got 'hunter2')"


def test_a_refused_cache_url_is_not_printed_even_masked() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(
            {
                "SNAPGRAPH_CACHE_URL": "redis://:hunter2@cache.internal:99999/0",
                "SNAPGRAPH_CACHE_SECRET": "s",
            }
        )
    assert str(caught.value) == (
        "SNAPGRAPH_CACHE_URL must be memory:// or a Redis URL: "
        "each host must be host or host:port, with a port from 1 to 65535"
    )


def test_the_cache_secret_can_come_from_a_file(tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-from-a-volume\n")
    settings = Settings.from_environ(
        {"SNAPGRAPH_CACHE_URL": "redis://cache/0", "SNAPGRAPH_CACHE_SECRET_FILE": str(secret)}
    )
    assert settings.cache_secret == "s3cret-from-a-volume"  # the trailing newline dropped


@pytest.mark.parametrize(
    ("content", "also_inline", "problem"),
    [
        (None, False, "cannot be read (FileNotFoundError)"),
        ("\n", False, "names an empty file"),
        ("s3cret", True, "is set together with SNAPGRAPH_CACHE_SECRET"),
    ],
)
def test_a_secret_file_that_cannot_work_is_refused(
    tmp_path, content: str | None, also_inline: bool, problem: str
) -> None:
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    environ = {"SNAPGRAPH_CACHE_SECRET_FILE": str(secret)}
    if also_inline:
        environ["SNAPGRAPH_CACHE_SECRET"] = "inline-s3cret"
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(environ)
    assert caught.value.setting == "SNAPGRAPH_CACHE_SECRET_FILE"
    assert problem in str(caught.value)
    assert "s3cret" not in str(caught.value).replace(str(tmp_path), "")
