"""The README stays true to the code."""

from __future__ import annotations

import dataclasses

from conftest import ROOT
from snapgraph.settings import Settings, env_name

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_with_its_flag() -> None:
    for setting in dataclasses.fields(Settings):
        assert f"`{env_name(setting.name)}`" in README, setting.name
        assert f"`--{setting.name.replace('_', '-')}" in README, setting.name


def test_the_first_commands_serve_and_test() -> None:
    assert "make serve" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
