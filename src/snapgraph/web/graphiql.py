"""The GraphiQL explorer, served with every asset from the gateway itself.

`make assets` installs GraphiQL and React through npm (pinned by js/package-lock.json) and
copies their browser bundles to `static/vendor/`. Every wheel and sdist carries them: the
build refuses to run without them (hatch_build.py). So the page never loads a script from
anywhere else, and there is no CDN fallback. Only a source checkout that never ran
`make assets` lacks them; there a browser asking for /graphql gets a 503 page saying what to
run (the API itself works), and one warning is logged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

logger = logging.getLogger("snapgraph.graphiql")

VENDOR_DIR = Path(__file__).parent / "static" / "vendor"
ASSETS_PATH = "/graphiql/assets"
# Copied from the npm packages by `make assets`; hatch_build.py checks the same four names.
BUNDLES = ("react.js", "react-dom.js", "graphiql.js", "graphiql.css")
EXAMPLE_QUERY = """# Your snapshots. Set a credential in the Headers pane below first.
query MySnapshots {
  snapshots {
    id
    name
    status
    type
    sizeBytes
    createdAt
  }
}
"""
PAGES_QUERY = """# Your snapshots a page at a time, filtered and ordered. For the next page, put
# the endCursor it returned into Variables as "after" (while hasNextPage is true).
query SnapshotPages($after: String) {
  snapshotsConnection(
    first: 10
    after: $after
    filter: { status: ["ready"] }
    orderBy: [{ field: CREATED_AT, direction: DESC }]
  ) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      node { id name status sizeBytes createdAt }
    }
  }
}
"""
HEADERS_HINT = '{\n  "X-API-Key": "paste your API key here"\n}'
# The explorer's tabs: the whole list first, then pages.
EXAMPLE_TABS = (
    {"query": EXAMPLE_QUERY, "headers": HEADERS_HINT},
    {"query": PAGES_QUERY, "variables": '{\n  "after": null\n}', "headers": HEADERS_HINT},
)

_MISSING_ASSETS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>snapgraph · explorer not installed</title>
</head>
<body>
  <h1>The explorer's assets are not installed</h1>
  <p>This gateway runs from a source checkout that never ran <code>make assets</code>, which
  installs GraphiQL and React with npm (pinned by <code>js/package-lock.json</code>). Install
  Node.js and npm, run <code>make assets</code> (or <code>make serve</code>), and restart.</p>
  <p>The GraphQL API at this address works: POST queries to it with a credential.</p>
</body>
</html>
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>snapgraph · GraphiQL</title>
  <link rel="stylesheet" href="{css}">
  <style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
  <div id="graphiql">Loading the explorer…</div>
  <script src="{react}"></script>
  <script src="{react_dom}"></script>
  <script src="{graphiql}"></script>
  <script>
    // GraphiQL 3 writes each history entry's headers to localStorage even with
    // shouldPersistHeaders off; this storage drops them, so a pasted token stays in the tab.
    const HISTORY_KEYS = ["graphiql:queries", "graphiql:favorites"];
    function withoutHeaders(value) {{
      try {{
        const saved = JSON.parse(value);
        for (const entry of saved.queries ?? []) delete entry.headers;
        return JSON.stringify(saved);
      }} catch {{
        return value;
      }}
    }}
    const storage = {{
      getItem: (key) => localStorage.getItem(key),
      setItem: (key, value) =>
        localStorage.setItem(key, HISTORY_KEYS.includes(key) ? withoutHeaders(value) : value),
      removeItem: (key) => localStorage.removeItem(key),
      clear: () => localStorage.clear(),
      get length() {{ return localStorage.length; }},
    }};
    const fetcher = GraphiQL.createFetcher({{ url: window.location.pathname }});
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {{
        fetcher,
        storage,
        defaultQuery: {query},
        defaultHeaders: {headers},
        defaultTabs: {tabs},
        headerEditorEnabled: true,
        // Tokens pasted in the Headers pane stay in this tab, never in localStorage.
        shouldPersistHeaders: false,
        defaultEditorToolsVisibility: "headers",
      }})
    );
  </script>
</body>
</html>
"""


def assets_available() -> bool:
    return all((VENDOR_DIR / name).is_file() for name in BUNDLES)


def mount(app: FastAPI, *, enabled: bool) -> None:
    """Serve the vendored bundles, when enabled and present; warn once otherwise."""
    app.state.graphiql_enabled = enabled
    if not enabled:
        return
    if assets_available():
        app.mount(ASSETS_PATH, StaticFiles(directory=VENDOR_DIR), name="graphiql-assets")
        app.state.graphiql_html, app.state.graphiql_status = render(), 200
        app.state.graphiql_csp = content_security_policy(app.state.graphiql_html)
    else:
        logger.warning(
            "GraphiQL assets are missing (run `make assets`): browsers asking for the explorer "
            "get a page saying so"
        )
        app.state.graphiql_html, app.state.graphiql_status = _MISSING_ASSETS_PAGE, 503
        app.state.graphiql_csp = "default-src 'none'; frame-ancestors 'none'"  # no script


def content_security_policy(page_html: str) -> str:
    """What the explorer's page may do: scripts from this gateway and its one inline script
    (by hash), requests to this gateway only, and no framing by another site (a page where
    people paste tokens must not be clickjacked). Styles may be inline: GraphiQL's editors
    set them as they render."""
    inline = page_html.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' 'sha256-{digest}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def render() -> str:
    """The explorer's page, every asset from `ASSETS_PATH` on this gateway."""
    return _PAGE.format(
        css=f"{ASSETS_PATH}/graphiql.css",
        react=f"{ASSETS_PATH}/react.js",
        react_dom=f"{ASSETS_PATH}/react-dom.js",
        graphiql=f"{ASSETS_PATH}/graphiql.js",
        query=json.dumps(EXAMPLE_QUERY),
        headers=json.dumps(HEADERS_HINT),
        tabs=json.dumps(EXAMPLE_TABS),
    )


def wants_page(request: Request) -> bool:
    """A browser navigating to /graphql (GET, asks for HTML, sends no GraphQL parameters)."""
    return (
        request.app.state.graphiql_enabled
        and request.method == "GET"
        and "query" not in request.query_params
        and "extensions" not in request.query_params
        and "text/html" in request.headers.get("accept", "")
    )


def page(request: Request) -> HTMLResponse:
    return HTMLResponse(
        request.app.state.graphiql_html,
        status_code=request.app.state.graphiql_status,
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": request.app.state.graphiql_csp,
            "X-Content-Type-Options": "nosniff",
        },
    )
