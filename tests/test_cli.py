from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    completed = subprocess.run(
        [sys.executable, "-m", "snapgraph", "serve", "--port", "eighty"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "snapgraph: SNAPGRAPH_PORT must be a whole number (got 'eighty')"
    ]


def test_a_bad_environment_variable_exits_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SNAPGRAPH_CACHE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("SNAPGRAPH_CACHE_SECRET", raising=False)
    assert main(["serve"]) == 2
    assert "SNAPGRAPH_CACHE_SECRET must be set" in capsys.readouterr().err
