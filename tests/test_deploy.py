"""Deployment files: the Dockerfile passes hadolint, and its build steps, run outside a
container by deploy/smoke.sh, give a wheel that installs, serves and answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, chromium_or_skip, free_port, node_or_skip
from snapgraph.web import graphiql


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    completed = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_image_steps_build_a_wheel_that_serves_its_explorer_offline(tmp_path: Path) -> None:
    node_or_skip()
    chromium_or_skip()
    if shutil.which("curl") is None:
        pytest.fail("curl is needed by deploy/smoke.sh")
    completed = subprocess.run(
        ["bash", str(ROOT / "deploy" / "smoke.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        start_new_session=True,  # its signals stay among its own processes
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHON": sys.executable,
            "SMOKE_BROWSER": "1",
            "SMOKE_PORT": str(free_port()),
        },
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "smoke: ok" in completed.stdout
    # The wheel's own explorer: every asset from the installed package, none from a CDN.
    (report,) = [json.loads(line) for line in completed.stdout.splitlines() if line[:1] == "{"]
    assert report["blocked"] == []
    assert '"id": "snap-alice-dev"' in report["result"]


def test_the_image_wheel_holds_the_explorer_and_py_typed(tmp_path: Path) -> None:
    node_or_skip()
    completed = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build.sh"), str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHON": sys.executable,
        },
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("snapgraph-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    vendor = "snapgraph/web/static/vendor/"
    # The four bundles and nothing else: no `.copied` marker, whatever the checkout holds.
    assert {n for n in names if n.startswith(vendor)} == {vendor + b for b in graphiql.BUNDLES}
    assert "snapgraph/py.typed" in names
