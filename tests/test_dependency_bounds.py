"""pyproject's version bounds hold: its lowest direct versions pass the tests that cover them,
and requirements/dev.lock, the dev environment `make test` installs, satisfies pyproject."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import ports
from conftest import FIRST_REDIS_URL, ROOT, redis_database_below

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
LOCK = ROOT / "requirements" / "dev.lock"
# Run against the lowest versions (after ruff and mypy): every direct dependency is exercised
# by at least one of these, including each test that once caught a bound too low (test_limits,
# test_compiled_plans, test_cli's schema check, test_workers, test_manifests, and test_tracing
# after the async tests). About a minute on two cores (four workers of its own); the whole
# suite runs against the lock in `make test`.
LOWEST_TESTS = (
    "tests/test_snapshots_query.py",
    "tests/test_snapshots_connection.py",
    "tests/test_http.py",
    "tests/test_settings.py",
    "tests/test_schema.py",
    "tests/test_limits.py",
    "tests/test_validate_once.py",
    "tests/test_edge_documents.py",
    "tests/test_compiled_plans.py",
    "tests/test_cache.py",
    "tests/test_response_cache.py",
    "tests/test_upstream_errors.py",
    "tests/test_tracing.py",
    "tests/test_federation.py",
    "tests/test_workers.py",
    "tests/test_manifests.py",
    "tests/test_cli.py::test_schema_graphql_matches_what_the_code_serves",
    "tests/test_cache_redis.py::test_entries_are_shared_through_redis_with_ttls_and_no_credentials",
    "tests/test_cache_redis.py::test_gateway_rides_out_a_redis_restart_and_reconnects",
    "tests/test_metrics.py::test_a_scripted_run_moves_every_counter_exactly",
    "tests/test_metrics.py::test_no_created_series_and_build_info",
    "tests/test_dependency_bounds.py::test_the_lock_satisfies_pyproject",
)
# The two longest generated-document runs (20 s of the compiled path's differential tests);
# the other generated ones still run hypothesis-graphql.
LOWEST_DESELECTED = (
    "tests/test_compiled_plans.py::test_generated_documents_match_graphql_core",
    "tests/test_compiled_plans.py::test_generated_connection_documents_match_graphql_core",
)


def test_the_lock_satisfies_pyproject() -> None:
    pins = _lock_pins()
    stale = []
    for requirement in _project_requirements("test"):
        versions = pins.get(canonicalize_name(requirement.name), [])
        if not versions or not all(
            requirement.specifier.contains(version, prereleases=True) for version in versions
        ):
            stale.append(f"{requirement} (locked: {', '.join(map(str, versions)) or 'none'})")
    assert stale == [], "requirements/dev.lock disagrees with pyproject.toml: run `make lock`"
    assert "make lock" in LOCK.read_text(encoding="utf-8").splitlines()[1]


@pytest.mark.redis
@pytest.mark.node
@pytest.mark.timeout(900)
@pytest.mark.usefixtures("one_heavy_test_at_a_time")
def test_the_lowest_direct_versions_pass_the_tests_that_cover_them(tmp_path: Path) -> None:
    uv = _uv(tmp_path)
    venv = tmp_path / "lowest"
    python = str(venv / "bin" / "python")
    unset = ("VIRTUAL_ENV", "PYTHONPATH", "PYTEST_XDIST_WORKER")
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    # Redis databases and loopback ports of its own, after those of this run's workers.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    environ["SNAPGRAPH_TEST_REDIS_URL"] = redis_database_below(FIRST_REDIS_URL, workers)
    environ[ports.SHIFT_ENV] = str(workers)
    environ["UV_PYTHON_DOWNLOADS"] = "never"  # an interpreter of this machine, or a clear failure
    _run([uv, "venv", "--quiet", "--python", _lowest_python(), str(venv)], environ, timeout=120)
    install = ["pip", "install", "--quiet", "--python", python, "--resolution", "lowest-direct"]
    _run([uv, *install, "--editable", f"{ROOT}[test]"], environ, timeout=600)
    # ruff's and mypy's lowest versions against the code as `make test` checks it, and the
    # code's types against those of its dependencies' lowest versions.
    _run([str(venv / "bin" / "ruff"), "check", "--no-cache", "src", "tests", "benchmarks"], environ)
    mypy = [str(venv / "bin" / "mypy"), "--no-incremental", "--cache-dir", str(tmp_path / "mypy")]
    _run(mypy, environ, timeout=300)
    deselected = [f"--deselect={test}" for test in LOWEST_DESELECTED]
    pytest_args = ["-p", "no:cacheprovider", "-q", "--tb=short", "--timeout=120"]
    _run([python, "-m", "pytest", *pytest_args, *deselected, *LOWEST_TESTS], environ, timeout=480)


def _lowest_python() -> str:
    """The lowest versions go with the lowest Python snapgraph supports: a newer one has no
    wheels for some of them (orjson 3.10.0 has none for 3.13). Under that Python, this one."""
    lowest = PROJECT["requires-python"].removeprefix(">=")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    return sys.executable if running == lowest else lowest


def _project_requirements(*extras: str) -> list[Requirement]:
    """pyproject's dependencies and those of `extras`, with snapgraph[...] followed."""
    requirements = [Requirement(text) for text in PROJECT["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        if (extra := pending.pop()) in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "snapgraph":
                pending.extend(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def _lock_pins() -> dict[str, list[Version]]:
    """Each locked package's pinned versions (one per marker fork; usually one)."""
    pins: dict[str, list[Version]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        (pin,) = requirement.specifier
        assert pin.operator == "==", line
        pins.setdefault(canonicalize_name(requirement.name), []).append(Version(pin.version))
    return pins


def _uv(tmp_path: Path) -> str:
    """uv from the test extra; or, in a venv made before it joined, a copy fetched from PyPI."""
    try:
        import uv
    except ImportError:
        tools = tmp_path / "uv-tool"
        subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
        pip = [str(tools / "bin" / "python"), "-m", "pip", "install", "--quiet", "uv"]
        subprocess.run(pip, check=True, timeout=300)
        return str(tools / "bin" / "uv")
    return str(uv.find_uv_bin())


def _run(command: list[str], environ: dict[str, str], timeout: float = 60) -> None:
    """Run `command` in the repository; a failure shows the end of what it printed."""
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    code, tail = done.returncode, "\n".join(done.stdout.splitlines()[-80:])
    assert code == 0, f"{Path(command[0]).name} {' '.join(command[1:3])} ... exited {code}:\n{tail}"
