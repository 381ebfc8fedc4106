"""The fleet test: three snapgraph replicas behind HAProxy, on a Redis Cluster, under load,
through three faults. Run it alone with `python tests/fleet.py` (it prints its report), or
through pytest (tests/test_fleet.py checks the report).

    t = 0             load starts: USERS users, each sending one query after another
    t = KILL_AT       SIGKILL one replica (restarted RESTART_AFTER seconds later)
    t = FAILOVER_AT   SIGKILL the Redis master holding the most users; its replica takes over
    t = UPSTREAM_AT   the upstream stops for UPSTREAM_DOWN seconds, then starts again
    t = DURATION      load stops

Every answer is checked: each snapshot id names its owner (`snap-user-007-...`), so an id of
another user in an answer is a cross-user leak. Upstream calls are logged by the upstream
process itself (a file that survives its restart), so coalescing is counted where it happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from ports import free_port
from redis_servers import Cluster, redis_cluster, wait_until

ROOT = Path(__file__).parent.parent
QUERY = "query Fleet { snapshots { id name sizeBytes } }"
USERS = 40
PER_USER = 100
TTL = 2.0
DURATION = 42.0  # 18 s after the upstream stops: recovery took 7-12 s in runs
KILL_AT, RESTART_AFTER = 6.0, 4.0
FAILOVER_AT = 14.0
UPSTREAM_AT, UPSTREAM_DOWN = 24.0, 4.0
OWNER = re.compile(r"^snap-(user-\d{3})-")


@dataclass
class Outcome:
    at: float
    user: int
    status: int  # HTTP status, 0 for a transport error
    ok: bool  # 200, full data, no error
    stale: bool
    codes: tuple[str, ...]
    leak: bool


@dataclass
class Report:
    requests: int = 0
    answered: int = 0
    stale: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    # Answers cut when the replica writing them was SIGKILLed (within a second of the kill):
    # no proxy can finish an answer whose headers it already passed on.
    cut_by_kill: int = 0
    leaks: int = 0
    uncoded: int = 0  # answers that were neither full nor stale and named no error code
    # Users who had a full answer before the upstream stopped, yet none (full or stale)
    # while it was down: what the stale window exists to prevent.
    unserved_in_outage: list[int] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    upstream_calls: int = 0
    calls_per_user_per_ttl: float = 0.0
    recovery_seconds: dict[str, float | None] = field(default_factory=dict)

    def lines(self) -> list[str]:
        recovered = ", ".join(
            f"{fault} {'NOT RECOVERED' if seconds is None else f'{seconds:.1f} s'}"
            for fault, seconds in self.recovery_seconds.items()
        )
        return [
            f"requests {self.requests}, answered {self.answered} "
            f"({100 * self.answered / max(1, self.requests):.2f}%), of them stale {self.stale}",
            f"5xx {self.server_errors}, transport errors {self.transport_errors} "
            f"(and {self.cut_by_kill} cut by the SIGKILL itself), "
            f"GraphQL error codes {dict(self.codes) or 'none'}",
            f"cross-user leaks {self.leaks}, answers without a code {self.uncoded}, "
            f"users unserved during the upstream outage {self.unserved_in_outage or 'none'}",
            f"upstream calls {self.upstream_calls}: {self.calls_per_user_per_ttl:.2f} per user "
            f"per {TTL:g} s TTL (1.00 = one call per user per TTL for the whole fleet)",
            f"recovery after each fault: {recovered}",
        ]


# --- the processes ------------------------------------------------------------------------


def upstream_main(port: int, log: str) -> None:
    """The reference upstream with USERS generated users; logs each list call to `log`."""
    import uvicorn

    from snapgraph.reference.app import create_reference_app
    from snapgraph.reference.data import Dataset

    app = create_reference_app(Dataset.generated(users=USERS, per_user=PER_USER))
    calls = open(log, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    async def logged(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and scope["path"] == "/v1/snapshots":
            headers = dict(scope["headers"])
            calls.write(headers.get(b"x-api-key", b"-").decode() + "\n")
        await app(scope, receive, send)

    uvicorn.run(logged, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _start_upstream(port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, __file__, "upstream", str(port), str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_http(f"http://127.0.0.1:{port}/v1/snapshots", process)
    return process


def _start_replica(
    port: int, upstream: str, cluster: Cluster, secret_file: Path
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapgraph",
            "serve",
            f"--port={port}",
            f"--upstream-url={upstream}",
            f"--cache-url={cluster.url}",
            f"--cache-secret-file={secret_file}",
            f"--cache-ttl={TTL}",
            "--upstream-deadline=3",
            # Behind haproxy, as deploy/ runs them: every connection from one address.
            "--http-max-connections-per-client=0",
            "--upstream-breaker-reset=1",
            "--shutdown-delay=0",
            "--log-level=warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_http(f"http://127.0.0.1:{port}/readyz", process)
    return process


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    def answers() -> bool:
        assert process.poll() is None, f"the process behind {url} exited"
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.TransportError:
            return False

    wait_until(answers, url)


def _haproxy_config(port: int, replicas: list[int]) -> str:
    """deploy/haproxy.cfg as shipped, pointed at loopback ports: the servers, the frontend's
    port, and no stats frontend or DNS resolution (the addresses are literal)."""
    shipped = (ROOT / "deploy" / "haproxy.cfg").read_text()
    servers = "\n".join(
        f"    server snapgraph-{n + 1} 127.0.0.1:{p}" for n, p in enumerate(replicas)
    )
    config = re.sub(r"(?m)^    server snapgraph-\d .*\n?", "", shipped)
    config = config.replace("    default-server", servers + "\n    default-server", 1)
    config = config.replace(" init-addr none resolvers dns", "")
    config = re.sub(r"(?ms)^resolvers dns\n.*?(?=^\S)", "", config)
    config = re.sub(r"(?ms)^frontend stats\n.*", "", config)
    config = config.replace("bind :8080", f"bind 127.0.0.1:{port}")
    return config.replace("log stdout format raw local0 info", "")


def _start_haproxy(directory: Path, port: int, replicas: list[int]) -> subprocess.Popen[bytes]:
    config = directory / "haproxy.cfg"
    config.write_text(_haproxy_config(port, replicas))
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_http(f"http://127.0.0.1:{port}/readyz", process)
    return process


# --- the load -----------------------------------------------------------------------------


async def _user_loop(
    http: httpx.AsyncClient, user: int, started: float, outcomes: list[Outcome]
) -> None:
    headers = {"X-API-Key": f"key-{user:03d}"}
    while time.monotonic() - started < DURATION:
        try:
            response = await http.post("/graphql", json={"query": QUERY}, headers=headers)
        except httpx.TransportError as exc:
            print(f"transport error: {exc!r}", file=sys.stderr)
            outcomes.append(Outcome(time.monotonic() - started, user, 0, False, False, (), False))
            await asyncio.sleep(0.05)
            continue
        # Each answer is placed at the time it arrived: that is when a user sees it.
        outcomes.append(_judge(time.monotonic() - started, user, response))
        await asyncio.sleep(0.02)


def _judge(at: float, user: int, response: httpx.Response) -> Outcome:
    try:
        body = response.json()
    except json.JSONDecodeError:
        return Outcome(at, user, response.status_code, False, False, (), False)
    codes = tuple(
        str(error.get("extensions", {}).get("code")) for error in body.get("errors") or ()
    )
    items = (body.get("data") or {}).get("snapshots") or []
    owners = {match.group(1) for item in items if (match := OWNER.match(item["id"]))}
    leak = bool(owners - {f"user-{user:03d}"})
    stale = bool((body.get("extensions") or {}).get("stale"))
    complete = len(owners) == 1 and sum(1 for item in items if OWNER.match(item["id"])) == PER_USER
    ok = response.status_code == 200 and not codes and complete and not leak
    return Outcome(at, user, response.status_code, ok, stale, codes, leak)


# --- the run ------------------------------------------------------------------------------


def run(directory: Path) -> Report:
    log = directory / "upstream-calls.log"
    secret_file = directory / "cache-secret"
    secret_file.write_text("fleet-test-secret\n")
    upstream_port, balancer_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    with redis_cluster(directory / "cluster") as cluster:
        upstream = _start_upstream(upstream_port, log)
        ports = [free_port() for _ in range(3)]
        replicas = [_start_replica(p, upstream_url, cluster, secret_file) for p in ports]
        balancer = _start_haproxy(directory, balancer_port, ports)
        try:
            outcomes, faults = asyncio.run(
                _load_with_faults(balancer_port, ports, replicas, upstream, log, cluster)
            )
        finally:
            for process in [balancer, upstream, *replicas]:
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=15)
    return _report(outcomes, faults, log)


async def _load_with_faults(
    balancer_port: int,
    ports: list[int],
    replicas: list[subprocess.Popen[bytes]],
    upstream: subprocess.Popen[bytes],
    log: Path,
    cluster: Cluster,
) -> tuple[list[Outcome], dict[str, float]]:
    outcomes: list[Outcome] = []
    faults: dict[str, float] = {}
    limits = httpx.Limits(max_connections=USERS, max_keepalive_connections=USERS)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{balancer_port}", timeout=30, limits=limits
    ) as http:
        started = time.monotonic()
        load = [asyncio.create_task(_user_loop(http, u, started, outcomes)) for u in range(USERS)]
        await _at(started, KILL_AT)
        faults["replica SIGKILL"] = time.monotonic() - started
        replicas[1].send_signal(signal.SIGKILL)
        replicas[1].wait(timeout=10)
        await _at(started, KILL_AT + RESTART_AFTER)
        upstream_url = f"http://127.0.0.1:{_port_of(upstream)}"
        secret_file = log.parent / "cache-secret"
        replicas[1] = await asyncio.to_thread(
            _start_replica, ports[1], upstream_url, cluster, secret_file
        )
        await _at(started, FAILOVER_AT)
        faults["Redis master failover"] = time.monotonic() - started
        await asyncio.to_thread(_kill_busiest_master, cluster)
        await _at(started, UPSTREAM_AT)
        faults["upstream stopped"] = time.monotonic() - started
        port = _port_of(upstream)
        upstream.send_signal(signal.SIGKILL)
        upstream.wait(timeout=10)
        await _at(started, UPSTREAM_AT + UPSTREAM_DOWN)
        restarted = await asyncio.to_thread(_start_upstream, port, log)
        await asyncio.gather(*load)
    restarted.terminate()
    restarted.wait(timeout=10)
    return outcomes, faults


def _kill_busiest_master(cluster: Cluster) -> None:
    keys = cluster.keys("snapgraph:list:*")
    busiest = Counter(cluster.master_of(key).port for key in keys).most_common(1)
    key = next(k for k in keys if cluster.master_of(k).port == busiest[0][0])
    cluster.kill_master_of(key)


def _port_of(process: subprocess.Popen[bytes]) -> int:
    return int(process.args[3])  # type: ignore[index]


async def _at(started: float, second: float) -> None:
    await asyncio.sleep(max(0.0, started + second - time.monotonic()))


def _report(outcomes: list[Outcome], faults: dict[str, float], log: Path) -> Report:
    report = Report(requests=len(outcomes))
    for outcome in outcomes:
        report.answered += outcome.ok or (outcome.stale and outcome.status == 200)
        report.stale += outcome.stale
        report.server_errors += outcome.status >= 500
        cut = outcome.status == 0 and 0 <= outcome.at - faults["replica SIGKILL"] < 1.0
        report.cut_by_kill += cut
        report.transport_errors += outcome.status == 0 and not cut
        report.leaks += outcome.leak
        report.uncoded += outcome.status == 200 and not (
            outcome.ok or outcome.stale or outcome.codes
        )
        report.codes.update(outcome.codes)
    calls = [line for line in log.read_text().splitlines() if line.startswith("key-")]
    report.upstream_calls = len(calls)
    report.calls_per_user_per_ttl = len(calls) / (USERS * DURATION / TTL)
    report.recovery_seconds = _recoveries(outcomes, faults)
    report.unserved_in_outage = _unserved_in_outage(outcomes, faults["upstream stopped"])
    return report


def _unserved_in_outage(outcomes: list[Outcome], stopped_at: float) -> list[int]:
    """Users answered in full before the upstream stopped who got no answer, full or stale,
    while it was down. Counted per user, not per request: on a busy machine one request may
    land on a replica that lost its Redis connection for a moment and has no copy of its
    own (an UPSTREAM_UNAVAILABLE, coded), and the user's next request is served stale."""
    before = {o.user for o in outcomes if o.at < stopped_at and o.ok}
    during = {
        o.user
        for o in outcomes
        if stopped_at <= o.at < stopped_at + UPSTREAM_DOWN and (o.ok or o.stale)
    }
    return sorted(before - during)


def _recoveries(outcomes: list[Outcome], faults: dict[str, float]) -> dict[str, float | None]:
    """Per fault: from the fault until the last answer that was not a fresh, full one before
    the next fault (0 when every answer was); None when none was fresh again by then."""
    times = [*sorted(faults.values()), DURATION]
    recoveries: dict[str, float | None] = {}
    for name, at in faults.items():
        until = next(t for t in times if t > at)
        window = [o for o in outcomes if at <= o.at < until]
        bad = [o.at for o in window if not o.ok or o.stale]
        fine_after = [o for o in window if o.ok and not o.stale and (not bad or o.at > max(bad))]
        if not bad:
            recoveries[name] = 0.0
        elif fine_after:
            recoveries[name] = max(bad) - at
        else:
            recoveries[name] = None
    return recoveries


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        upstream_main(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        report = run(Path(directory))
    print("\n".join(report.lines()))
    recovered = all(seconds is not None for seconds in report.recovery_seconds.values())
    return 0 if report.leaks == 0 and recovered else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
