"""The GraphiQL explorer, served with every asset from the gateway itself.

`make assets` installs GraphiQL and React through npm (pinned by js/package-lock.json) and
copies their browser bundles to `static/vendor/`, which ships in the wheel. When that folder
is missing (a checkout that never ran the setup) the page falls back to a public CDN and one
warning is logged: it then only works where the browser can reach the internet.
"""

from __future__ import annotations

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
# Versions pinned in js/package.json; the CDN fallback names the same ones.
BUNDLES = {
    "react.js": "https://unpkg.com/react@18.3.1/umd/react.production.min.js",
    "react-dom.js": "https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js",
    "graphiql.js": "https://unpkg.com/graphiql@3.8.3/graphiql.min.js",
    "graphiql.css": "https://unpkg.com/graphiql@3.8.3/graphiql.min.css",
}
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
HEADERS_HINT = '{\n  "X-API-Key": "paste your API key here"\n}'

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
        app.state.graphiql_html = render(local=True)
    else:
        logger.warning(
            "GraphiQL assets are missing (run `make assets`): the explorer loads them from a "
            "public CDN and will not work without internet access"
        )
        app.state.graphiql_html = render(local=False)


def render(*, local: bool) -> str:
    def url(name: str) -> str:
        return f"{ASSETS_PATH}/{name}" if local else BUNDLES[name]

    return _PAGE.format(
        css=url("graphiql.css"),
        react=url("react.js"),
        react_dom=url("react-dom.js"),
        graphiql=url("graphiql.js"),
        query=json.dumps(EXAMPLE_QUERY),
        headers=json.dumps(HEADERS_HINT),
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
    return HTMLResponse(request.app.state.graphiql_html, headers={"Cache-Control": "no-cache"})
