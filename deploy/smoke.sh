#!/usr/bin/env bash
# The image's steps outside a container: build the wheel, install it into a clean venv,
# serve (the embedded reference upstream), query it, check the explorer is served offline.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
# Only a server this script started: `kill 0` would signal its whole process group.
trap 'if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

wheel=$(deploy/build.sh "$work/dist" | tail -n 1)
"${PYTHON:-python3}" -m venv "$work/venv"
# Like the image: dependencies pinned by the dev lock (the image adds the redis and otel extras).
"$work/venv/bin/pip" install --quiet -c requirements/dev.lock "$wheel"

# SMOKE_PORT: a port the caller keeps for it (the tests' own, which no other server takes).
port=${SMOKE_PORT:-$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
"$work/venv/bin/snapgraph" serve --port "$port" --log-level warning &
server=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/livez" >/dev/null 2>&1 && break
  sleep 0.2
done
answer=$(curl -fsS "http://127.0.0.1:$port/graphql" -H 'Content-Type: application/json' \
  -H 'X-API-Key: demo-alice-key' -d '{"query":"{ snapshots { id } }"}')
echo "$answer" | grep -q snap-alice-dev || { echo "unexpected answer: $answer"; exit 1; }
curl -fsS "http://127.0.0.1:$port/graphiql/assets/graphiql.js" -o /dev/null
curl -fsS "http://127.0.0.1:$port/readyz" | grep -q '"ready"'
# With SMOKE_BROWSER=1 (the tests set it): the explorer of the installed wheel, in headless
# Chromium with every non-local request blocked, runs a query; its report is printed.
if [ -n "${SMOKE_BROWSER:-}" ]; then
  node js/explorer-check.mjs "http://127.0.0.1:$port/graphql" demo-alice-key "$work/explorer.png"
fi
echo "smoke: ok ($wheel)"
