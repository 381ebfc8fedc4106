from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import (
    ALICE_KEY,
    FaultyUpstream,
    Lines,
    clean_environ,
    first_answer,
    free_port,
    run_snapgraph,
)
from snapgraph.cli import main

ROOT = Path(__file__).parent.parent


def test_schema_graphql_matches_what_the_code_serves() -> None:
    assert main(["schema", "--check", str(ROOT / "schema.graphql")]) == 0, "run `make schema`"


def test_schema_check_fails_on_drift(tmp_path: Path) -> None:
    drifted = tmp_path / "schema.graphql"
    drifted.write_text(
        (ROOT / "schema.graphql").read_text().replace("sizeBytes: Long!", "sizeBytes: Int!")
    )
    assert main(["schema", "--check", str(drifted)]) == 1


def test_a_bad_setting_prints_one_line_and_exits_2() -> None:
    completed = run_snapgraph("serve", "--port", "eighty")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "snapgraph: --port (SNAPGRAPH_PORT) must be a whole number (got 'eighty')"
    ]


def test_a_bad_environment_variable_exits_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SNAPGRAPH_CACHE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("SNAPGRAPH_CACHE_SECRET", raising=False)
    assert main(["serve"]) == 2
    assert "SNAPGRAPH_CACHE_SECRET must be set" in capsys.readouterr().err


def test_serve_without_an_upstream_runs_the_demo_end_to_end() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "snapgraph", "serve", f"--port={port}"],
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environ(),
    )
    assert process.stderr is not None
    stderr = Lines(process.stderr)
    graphiql = f"GraphiQL:  http://127.0.0.1:{port}/graphql"
    try:
        stderr.until(lambda text: graphiql in text and '"X-API-Key": "demo-alice-key"' in text)
        url = f"http://127.0.0.1:{port}/graphql"
        query = {"query": "{ snapshots { id name sizeBytes } }"}
        response = first_answer(
            lambda: httpx.post(url, headers={"X-API-Key": "demo-alice-key"}, json=query), process
        )
        assert b'"sizeBytes":5368709123' in response.content
        page = httpx.get(url, headers={"Accept": "text/html"})
        assert "GraphiQL" in page.text
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.join()
        process.stderr.close()


def test_the_reference_upstream_runs_alone() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "snapgraph", "upstream", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/snapshots"
        response = first_answer(
            lambda: httpx.get(url, headers={"X-API-Key": "demo-bob-key"}), process
        )
        assert response.status_code == 200
        assert "snap-bob-db" in {item["id"] for item in response.json()}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_upstream_url_with_a_password_exits_2_without_printing_it() -> None:
    completed = run_snapgraph("serve", "--upstream-url", "http://svc:hunter2@up")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "snapgraph: --upstream-url (SNAPGRAPH_UPSTREAM_URL) must not carry user:password@ "
        "(callers send their own credentials) (got 'http://***@up')"
    ]


def test_upstream_headers_never_reach_the_logs_even_at_debug(
    faulty: FaultyUpstream, tmp_path: Path
) -> None:
    faulty.respond(200, "[]", **{"set-cookie": "session=SECRETVALUE; Path=/", "x-trace": "TRACE"})
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "snapgraph", "serve", f"--port={port}", "--log-level=debug"],
            stderr=stderr,
            env=clean_environ(SNAPGRAPH_UPSTREAM_URL=faulty.url),
        )
        try:
            url = f"http://127.0.0.1:{port}/graphql"
            response = first_answer(
                lambda: httpx.post(url, headers=ALICE_KEY, json={"query": "{ snapshots { id } }"}),
                process,
            )
            assert response.json() == {"data": {"snapshots": []}}
        finally:
            process.terminate()
            process.wait(timeout=10)
    logged = log.read_text()
    assert "DEBUG" in logged and "upstream GET /v1/snapshots -> 200" in logged
    assert "SECRETVALUE" not in logged and "TRACE" not in logged
    assert "HTTP Request:" not in logged  # httpx's own line would repeat ours


def test_a_redis_url_that_cannot_work_exits_2_with_one_line_before_anything_starts() -> None:
    completed = run_snapgraph(
        "serve", "--cache-url=redis://:hunter2@cache:abc/0", "--cache-secret=s"
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "snapgraph: --cache-url (SNAPGRAPH_CACHE_URL) must be memory:// or a Redis URL: "
        "each host must be host or host:port, with a port from 1 to 65535"
    ]  # the URL itself is never printed: it may hold a password


@pytest.mark.parametrize(
    ("argv", "environ", "line"),
    [
        (["schema", "--check", "/nonexistent.graphql"], {}, "/nonexistent.graphql: No such file"),
        (["register", "/nonexistent.graphql", "--output=/tmp/x.json"], {}, "No such file"),
        (["schema", "--federation-version", "9.9"], {}, "invalid choice: '9.9'"),
        (["schema", "--check", "NOT_UTF8"], {}, "NOT_UTF8: not UTF-8 text"),
        (
            ["serve"],
            {"SNAPGRAPH_CACHE_URL": "redis://cache/0", "SNAPGRAPH_CACHE_SECRT": "hunter2"},
            "not a snapgraph setting (did you mean SNAPGRAPH_CACHE_SECRET?)",
        ),
        (
            ["serve", "--log-level", "loud"],
            {},
            "--log-level (SNAPGRAPH_LOG_LEVEL) must be one of",
        ),
        (
            ["serve", "--cache-url", "redis://:hunter2@cache:abc/0", "--cache-secret=s"],
            {},
            "--cache-url (SNAPGRAPH_CACHE_URL) must be memory:// or a Redis URL",
        ),
    ],
    ids=[
        "missing-check-file",
        "missing-document",
        "federation-version",
        "not-utf8",
        "misspelt-secret",
        "flag",
        "flag-with-a-password",
    ],
)
def test_command_line_mistakes_end_in_lines_on_stderr_and_exit_2(
    argv: list[str],
    environ: dict[str, str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    not_utf8 = tmp_path / "not-utf8.graphql"
    not_utf8.write_bytes(b"\xff\xfe{ snapshots { id } }")
    argv = [str(not_utf8) if arg == "NOT_UTF8" else arg for arg in argv]
    line = line.replace("NOT_UTF8", str(not_utf8))
    for name in [name for name in os.environ if name.startswith("SNAPGRAPH_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    assert line in stderr and "Traceback" not in stderr and "hunter2" not in stderr
    assert all(printed.startswith("snapgraph: ") for printed in stderr.splitlines())


def test_help_is_written_for_users_with_every_default() -> None:
    top = help_text("--help")
    assert "a GraphQL gateway" in top and "parsing only" not in top
    serve = help_text("serve", "--help")
    assert "[SNAPGRAPH_CACHE_TTL; default: 30.0]" in serve
    assert "[SNAPGRAPH_UPSTREAM_URL; default: unset]" in serve
    assert "TCP port to listen on (default: 9000)" in help_text("upstream", "--help")


def help_text(*args: str) -> str:
    """What `snapgraph ARGS` prints, on one line (argparse wraps it to the terminal)."""
    completed = run_snapgraph(*args)
    assert completed.returncode == 0, completed.stderr
    return " ".join(completed.stdout.split())


def test_a_mistyped_variable_and_a_secret_flag_are_warned_about(tmp_path: Path) -> None:
    port = free_port()
    stderr_file = tmp_path / "stderr"
    with stderr_file.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snapgraph",
                "serve",
                f"--port={port}",
                "--upstream-url=http://127.0.0.1:1",
                "--cache-secret=on-the-command-line",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=clean_environ(SNAPGRAPH_CACHE_TLL="5"),
        )
        try:
            first_answer(lambda: httpx.get(f"http://127.0.0.1:{port}/livez"), process)
        finally:
            process.terminate()
            process.wait(timeout=20)
    logged = stderr_file.read_text()
    assert (
        "SNAPGRAPH_CACHE_TLL is not a snapgraph setting; it is ignored "
        "(did you mean SNAPGRAPH_CACHE_TTL?)"
    ) in logged
    assert "--cache-secret is visible in the process list" in logged
    assert "on-the-command-line" not in logged


def test_without_redis_py_the_memory_cache_serves_and_a_redis_url_is_one_line() -> None:
    """redis-py is the `redis` extra: a gateway on memory:// never imports it."""
    blocked = (
        "import sys; sys.modules['redis'] = None; from snapgraph.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", blocked, "serve", "--cache-url=redis://cache/0", "--cache-secret=s"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_environ(),
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "snapgraph: --cache-url (SNAPGRAPH_CACHE_URL) names a Redis, but redis-py is not "
        "installed: pip install 'snapgraph[redis]'"
    ]
    served = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['redis'] = None\n"
            "from fastapi.testclient import TestClient\n"
            "from snapgraph.app import create_app\n"
            "from snapgraph.settings import Settings\n"
            "app = create_app(Settings.from_environ({}, upstream_url='http://127.0.0.1:1'))\n"
            "with TestClient(app) as client:\n"
            "    print(client.get('/readyz').json()['cache'])\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_environ(),
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "memory"


def test_serve_on_port_0_is_not_taken_for_a_clash_with_the_metrics_port() -> None:
    from snapgraph import workers
    from snapgraph.errors import ConfigError
    from snapgraph.settings import Settings

    workers.check(Settings.from_environ({"SNAPGRAPH_PORT": "0"}))  # the OS picks the port
    with pytest.raises(ConfigError):
        workers.check(
            Settings.from_environ({"SNAPGRAPH_PORT": "9100", "SNAPGRAPH_METRICS_PORT": "9100"})
        )
