"""`SNAPGRAPH_CACHE_URL` for a Redis, parsed: one node, a Redis Cluster, or Sentinel.

    redis://[[user]:password@]host:port[/db]                     one node
    redis+cluster://[[user]:password@]host:port[,host:port...]   Redis Cluster seed nodes
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
                                                                 Sentinel; the master of `service`

`rediss` instead of `redis` for TLS. Apart from redis_store.py, so that settings can check a
URL without redis-py installed (it is the `redis` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

SCHEMES = {
    "redis": ("node", False),
    "rediss": ("node", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}


class RedisUrlError(ValueError):
    """A cache URL that names no usable Redis; the message never repeats a password."""


@dataclass(frozen=True)
class RedisTarget:
    """Where the shared cache lives, parsed from `SNAPGRAPH_CACHE_URL`."""

    topology: str  # node, cluster or sentinel
    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    db: int = 0
    service: str | None = None
    username: str | None = None
    password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """Parse by hand: `urlsplit` cannot read a comma-separated list of hosts."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise RedisUrlError("the scheme must be one of " + ", ".join(f"{s}://" for s in SCHEMES))
    topology, tls = SCHEMES[scheme]
    if "?" in rest or "#" in rest:
        raise RedisUrlError("must not have a ?query or #fragment")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    nodes = tuple(_node(part) for part in hosts.split(","))
    if topology == "node" and len(nodes) > 1:
        raise RedisUrlError("redis:// takes one host (redis+cluster:// takes several)")
    segments = [segment for segment in path.split("/") if segment]
    service = segments.pop(0) if topology == "sentinel" and segments else None
    if topology == "sentinel" and not service:
        raise RedisUrlError("redis+sentinel:// needs the service name: .../<service>[/db]")
    db = _database(segments, topology)
    return RedisTarget(topology, nodes, tls, db, service, username, password)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    username, colon, password = userinfo.partition(":")
    if not colon:
        # `redis://secret@host` is how many write a password alone: take it as the password.
        return None, unquote(username)
    return (unquote(username) or None), unquote(password)


def _node(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), "6379"
    host = host.strip("[]")  # an IPv6 literal
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError("each host must be host or host:port, with a port from 1 to 65535")
    return host, int(port)


def _database(segments: list[str], topology: str) -> int:
    if not segments:
        return 0
    if len(segments) > 1 or not segments[0].isdigit():
        raise RedisUrlError("the path must be a database number, as in /0")
    if topology == "cluster" and segments[0] != "0":
        raise RedisUrlError("Redis Cluster has database 0 only")
    return int(segments[0])
