#!/usr/bin/env bash
# Build snapgraph's wheel, with the explorer's assets in it, into DIR (default dist/).
# The Dockerfile's builder stage runs exactly this, and so does CI (deploy/smoke.sh), so the
# image cannot drift from what is tested.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
python="${PYTHON:-python3}"

# As the Makefile: install the pinned npm packages once (npm ci wipes node_modules).
if [ ! -f js/node_modules/.installed ] || [ js/package-lock.json -nt js/node_modules/.installed ]; then
  npm ci --prefix js --no-audit --no-fund --loglevel=error
  touch js/node_modules/.installed
fi
vendor=src/snapgraph/web/static/vendor
mkdir -p "$vendor"
cp js/node_modules/react/umd/react.production.min.js "$vendor/react.js"
cp js/node_modules/react-dom/umd/react-dom.production.min.js "$vendor/react-dom.js"
cp js/node_modules/graphiql/graphiql.min.js "$vendor/graphiql.js"
cp js/node_modules/graphiql/graphiql.min.css "$vendor/graphiql.css"

"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" .
wheel=$(ls -t "$out"/snapgraph-*.whl | head -n 1)
# Refuse a wheel without the explorer: it would load GraphiQL from a public CDN.
"$python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = [n for n in ("react.js", "react-dom.js", "graphiql.js", "graphiql.css")
           if f"snapgraph/web/static/vendor/{n}" not in names]
sys.exit(f"{sys.argv[1]} lacks the explorer's assets: {missing}" if missing else 0)
PY
echo "$wheel"
