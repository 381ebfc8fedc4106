"""The GraphiQL explorer, in a real headless Chromium with the internet blocked."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT, Gateway, Upstream, chromium_or_skip, run_node
from snapgraph.web import graphiql


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


ARTIFACTS = ROOT / "artifacts"


def test_explorer_runs_a_query_with_no_internet(
    upstream: Upstream, start_served_gateway: Callable[..., Gateway]
) -> None:
    chromium_or_skip()
    gateway = start_served_gateway(upstream.url)  # Chromium needs a socket
    assert graphiql.assets_available(), "run `make assets` (make test does)"
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "explorer.png"
    (report,) = run_node(
        "explorer-check.mjs", gateway.url + "/graphql", "demo-alice-key", str(screenshot)
    )

    assert report["blocked"] == []  # every asset came from the gateway
    assert report["consoleErrors"] == [], report["consoleErrors"]  # a CSP refusal shows here
    assert "snapshots" in report["initialQuery"]
    assert "X-API-Key" in report["headersHint"]
    assert '"id": "snap-alice-dev"' in report["result"]
    assert '"sizeBytes": 5368709123' in report["result"]
    assert "demo-alice-key" not in report["storage"]  # the pasted key was not persisted
    assert upstream.requests[-1].headers["x-api-key"] == "demo-alice-key"
    assert screenshot.stat().st_size > 10_000


def test_explorer_page_references_only_local_assets(gateway: Gateway) -> None:
    page = gateway.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "unpkg.com" not in page.text and "/graphiql/assets/graphiql.js" in page.text
    # No script but the gateway's own and the page's one inline script; no framing.
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in page.headers["content-security-policy"].split(";")
    )
    assert (
        policy["script-src"].startswith("'self' 'sha256-") and "unsafe" not in policy["script-src"]
    )
    assert policy["frame-ancestors"] == "'none'" and policy["connect-src"] == "'self'"
    inline = page.text.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"  # as a browser computes it
    assert page.headers["x-content-type-options"] == "nosniff"
    asset = gateway.http.get("/graphiql/assets/graphiql.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


def test_without_assets_the_page_says_to_run_make_assets_and_loads_no_script(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    upstream: Upstream,
    start_gateway,
) -> None:
    monkeypatch.setattr(graphiql, "VENDOR_DIR", tmp_path)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "snapgraph.graphiql"]

    with caplog.at_level(logging.WARNING, logger="snapgraph.graphiql"):
        gateway = start_gateway(upstream.url)
        at_start = warnings()
        pages = [gateway.http.get("/graphql", headers={"Accept": "text/html"}) for _ in range(3)]
    page = pages[0]
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert "make assets" in page.text
    assert "<script" not in page.text and "<link" not in page.text  # no CDN, no third party
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    # One warning, at startup; three pages later, still that one (any message of the logger).
    assert len(at_start) == 1 and "make assets" in at_start[0]
    assert warnings() == at_start
    assert gateway.query("{ snapshots { id } }", {"X-API-Key": "demo-alice-key"})["data"]


def test_explorer_can_be_turned_off(upstream: Upstream, start_gateway) -> None:
    gateway = start_gateway(upstream.url, graphiql=False)
    response = gateway.http.get("/graphql", headers={"Accept": "text/html"})
    assert "GraphiQL" not in response.text
    assert response.status_code == 406
