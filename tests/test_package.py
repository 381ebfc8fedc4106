"""What someone adopting snapgraph gets: a repository that stands on its own, a contract page
that says what the reference upstream's OpenAPI says, and packages that always carry the
explorer (or are not built at all)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, Upstream
from snapgraph.upstream.models import ROW_FIELDS
from snapgraph.web import graphiql

CONTRACT = ROOT / "docs" / "upstream-contract.md"
# Written in two halves so that this file does not name what it looks for.
OUTSIDE_PATHS = ("../" + "shared", "shared" + "/upstream")
# What a fresh clone does not have: git's own files, installs, caches, build output, and the
# explorer's bundles (git-ignored: `make assets` copies them).
NOT_IN_A_CLONE = (
    ".git", ".venv", ".venv-*", "mutants", "node_modules", "vendor", "dist", "build", "artifacts",
    "*.egg-info", ".*_cache", ".hypothesis", "__pycache__", ".stamp-*",
)  # fmt: skip
VENDOR = "snapgraph/web/static/vendor/"


def test_no_file_of_the_repository_points_outside_it() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    offenders = [
        f"{name}: {outside}"
        for name in listed.split("\0")
        if (text := _text_of(ROOT / name)) is not None
        for outside in OUTSIDE_PATHS
        if outside in text
    ]
    assert offenders == []


def test_the_contract_page_says_what_the_reference_openapi_says(upstream: Upstream) -> None:
    spec = httpx.get(upstream.url + "/openapi.json").json()
    operation = spec["paths"]["/v1/snapshots"]["get"]
    schemas = spec["components"]["schemas"]
    item = schemas["SnapshotInfo"]
    page = CONTRACT.read_text(encoding="utf-8")

    documented = {row["field"].strip("`"): row for row in _table(_section(page, "The 200 answer"))}
    assert {name: _without_meaning(row) for name, row in documented.items()} == {
        name: _as_documented(schema, required=name in item["required"])
        for name, schema in item["properties"].items()
    }
    (type_parameter,) = [p for p in operation["parameters"] if p["name"] == "type"]
    (pattern,) = [
        option["pattern"] for option in type_parameter["schema"]["anyOf"] if "pattern" in option
    ]
    assert re.findall(r"pattern `([^`]+)`", _section(page, "Parameters")) == [pattern]
    problem = schemas["ValidationError"]
    assert re.findall(r"^- `(\w+)`:", _section(page, "The 422 answer"), re.M) == problem["required"]
    (scheme,) = operation["security"][0]
    assert f"`{scheme}`" in _section(page, "Authentication")


def test_the_contract_page_names_the_fields_snapgraph_checks() -> None:
    page = CONTRACT.read_text(encoding="utf-8")
    documented = [row["field"].strip("`") for row in _table(_section(page, "The 200 answer"))]
    assert documented == list(ROW_FIELDS)


def test_a_wheel_is_not_built_without_the_explorer_assets(tmp_path: Path) -> None:
    project = _clean_clone(tmp_path / "project")
    completed = _pip_wheel(project, tmp_path / "dist")
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0
    assert "the explorer's assets are missing" in output and "make assets" in output, output
    assert not list((tmp_path / "dist").glob("*.whl"))


def test_the_sdist_and_a_wheel_built_from_it_carry_the_explorer(
    tmp_path: Path, hatchling: Path
) -> None:
    assert graphiql.assets_available(), "run `make assets` (make test does)"
    project = _clean_clone(tmp_path / "project")
    vendor = project / "src" / VENDOR
    shutil.copytree(graphiql.VENDOR_DIR, vendor, ignore=shutil.ignore_patterns(".*"))
    (vendor / ".copied").touch()  # what `make assets` used to leave there: it must not ship
    built = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "--target", "sdist", "-d", str(tmp_path)],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(hatchling)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (sdist,) = tmp_path.glob("snapgraph-*.tar.gz")
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[-1] for name in archive.getnames()}
    assert {name for name in in_sdist if "/vendor/" in name} == _bundles("src/" + VENDOR)
    assert {"LICENSE", "hatch_build.py", "src/snapgraph/py.typed"} <= in_sdist

    wheel_built = _pip_wheel(sdist, tmp_path / "dist")
    assert wheel_built.returncode == 0, wheel_built.stdout + wheel_built.stderr
    (wheel,) = (tmp_path / "dist").glob("snapgraph-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert {name for name in in_wheel if "/vendor/" in name} == _bundles(VENDOR)
    assert "snapgraph/py.typed" in in_wheel
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in in_wheel)


@pytest.fixture(scope="module")
def hatchling(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build backend pyproject.toml names, from PyPI, to build an sdist with (pip cannot)."""
    target = tmp_path_factory.mktemp("hatchling")
    with (ROOT / "pyproject.toml").open("rb") as file:
        requires = tomllib.load(file)["build-system"]["requires"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *requires],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return target


def _clean_clone(destination: Path) -> Path:
    """The project as a fresh clone has it: no explorer bundles, nothing built."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    return destination


def _pip_wheel(source: Path, wheel_dir: Path) -> subprocess.CompletedProcess[str]:
    # As deploy/build.sh builds the image's wheel.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    return subprocess.run(
        [*pip_wheel, "--wheel-dir", str(wheel_dir), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _bundles(prefix: str) -> set[str]:
    return {prefix + name for name in graphiql.BUNDLES}


def _text_of(path: Path) -> str | None:
    """A file's text; None for what is not a readable text file (binary, deleted, a folder)."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    return None if b"\0" in data else data.decode("utf-8", errors="replace")


def _section(page: str, heading: str) -> str:
    """The text under `## heading`, up to the next `## `."""
    start = page.index(f"\n## {heading}\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else None]


def _table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `text`, by column name."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]  # rows[0]: |---|


def _without_meaning(row: dict[str, str]) -> dict[str, str]:
    return {column: value for column, value in row.items() if column not in ("field", "meaning")}


def _as_documented(schema: dict[str, object], *, required: bool) -> dict[str, str]:
    """How the contract page's table writes a property of the OpenAPI item schema."""
    options = schema.get("anyOf", [schema])
    assert isinstance(options, list)
    types = [option["type"] for option in options]
    (json_type,) = [name for name in types if name != "null"]
    return {
        "type": json_type,
        "required": "yes" if required else "no",
        "nullable": "yes" if "null" in types else "no",
        "default": f"`{json.dumps(schema['default'])}`" if "default" in schema else "—",
    }
