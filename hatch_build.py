"""A wheel or an sdist of snapgraph always carries the explorer's browser bundles, or is not built.

The bundles (React, ReactDOM, GraphiQL) come from npm, pinned by js/package-lock.json:
`make assets` (or deploy/build.sh) runs `npm ci` and copies them into
src/snapgraph/web/static/vendor/, which git ignores. Hatchling ships them as artifacts
(pyproject.toml), but a build from a clean clone would otherwise lack them without a word, and
the gateway's explorer would have nothing to load. So this hook fails the build instead.

It checks and never copies, even when js/node_modules is there: only `npm ci` proves those
packages are the ones package-lock.json pins (node_modules may be stale or hand-edited), and
one place, the Makefile (and deploy/build.sh, the same steps for the image, which has no
make), knows which file of which package is a bundle. An sdist carries the bundles, so a wheel
built from it passes. Editable installs are not checked: they serve the checkout itself, where
the explorer page says what to run when the bundles are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

VENDOR = Path("src", "snapgraph", "web", "static", "vendor")
# The same four names as snapgraph.web.graphiql.BUNDLES (tests/test_package.py builds a wheel
# and compares); this file cannot import snapgraph, whose dependencies a build lacks.
BUNDLES = ("react.js", "react-dom.js", "graphiql.js", "graphiql.css")


class ExplorerAssetsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        missing = [name for name in BUNDLES if not (Path(self.root) / VENDOR / name).is_file()]
        if missing:
            raise RuntimeError(missing_assets_message(missing))


def missing_assets_message(missing: list[str]) -> str:
    return (
        f"snapgraph: the explorer's assets are missing from {VENDOR.as_posix()}/ "
        f"({', '.join(missing)}), and a package without them would serve no explorer. "
        "Run `make assets` (npm ci from js/package-lock.json, then the copy), or "
        "deploy/build.sh, which does the same and builds the wheel; then build again."
    )
