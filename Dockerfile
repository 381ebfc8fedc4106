# syntax=docker/dockerfile:1
# snapgraph: the wheel is built by deploy/build.sh (which CI also runs, with deploy/smoke.sh,
# outside any container), then installed into a slim runtime that runs as a non-root user.

FROM python:3.11-slim-bookworm AS build
# Node builds the explorer's assets only (npm ci, pinned by js/package-lock.json); Debian's
# own nodejs/npm of this release are enough, and exact Debian versions leave the mirrors.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN deploy/build.sh /dist

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 snapgraph
COPY --from=build /dist/*.whl /tmp/
# The versions the tests ran against: every dependency pinned by the dev lock, so two builds
# of one commit install the same packages (the wheel's metadata has only ranges).
COPY requirements/dev.lock /tmp/constraints.txt
# With the redis extra (a shared cache: one node, Cluster or Sentinel) and the otel extra
# (tracing, off unless OTEL_* asks for it): a fleet needs the one, operators want the other.
# DL3013 asks to pin what pip installs: this is the wheel built above, and its dependencies
# are pinned by the constraints.
# hadolint ignore=DL3013
RUN for wheel in /tmp/*.whl; do \
        pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[redis,otel]"; \
    done \
    && rm /tmp/*.whl /tmp/constraints.txt
USER 10001
ENV SNAPGRAPH_HOST=0.0.0.0 \
    SNAPGRAPH_PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
# SIGTERM drains: /readyz answers 503, then in-flight requests finish (SNAPGRAPH_DRAIN_TIMEOUT).
STOPSIGNAL SIGTERM
CMD ["snapgraph", "serve"]
