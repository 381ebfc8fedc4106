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
# Each bundle replaced whole (a rename), and only when it differs: a build or a server
# reading it meanwhile never sees half a file.
vendor_copy() {
  cmp -s "$1" "$2" && return
  cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}
vendor_copy js/node_modules/react/umd/react.production.min.js "$vendor/react.js"
vendor_copy js/node_modules/react-dom/umd/react-dom.production.min.js "$vendor/react-dom.js"
vendor_copy js/node_modules/graphiql/graphiql.min.js "$vendor/graphiql.js"
vendor_copy js/node_modules/graphiql/graphiql.min.css "$vendor/graphiql.css"

# The build itself refuses to run without the bundles (hatch_build.py).
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" .
wheel=$(ls -t "$out"/snapgraph-*.whl | head -n 1)
# And the image takes no wheel whose explorer differs from the four bundles, or without the
# py.typed marker.
"$python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
vendor = "snapgraph/web/static/vendor/"
bundles = {vendor + n for n in ("react.js", "react-dom.js", "graphiql.js", "graphiql.css")}
shipped = {n for n in names if n.startswith(vendor)}
if shipped != bundles or "snapgraph/py.typed" not in names:
    sys.exit(f"{sys.argv[1]}: explorer files {sorted(shipped)}, expected {sorted(bundles)}, "
             f"and snapgraph/py.typed {'present' if 'snapgraph/py.typed' in names else 'missing'}")
PY
echo "$wheel"
