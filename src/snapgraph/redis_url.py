"""`SNAPGRAPH_CACHE_URL` for a Redis, parsed: one node, a Redis Cluster, or Sentinel.

    redis://[[user]:password@]host:port[/db]                     one node
    redis+cluster://[[user]:password@]host:port[,host:port...]   Redis Cluster seed nodes
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
                                                                 Sentinel; the master of `service`

`rediss` instead of `redis` for TLS. Apart from redis_store.py, so that settings can check a
URL without redis-py installed (it is the `redis` extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEMES = {
    "redis": ("node", False),
    "rediss": ("node", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}


_NODE_PROBLEM = "each host must be host or host:port, with a port from 1 to 65535"
# A DNS name, an IPv4 address, or (within brackets) an IPv6 address: letters, digits and
# the punctuation those use; never a space, a slash or an "@".
_HOST = re.compile(r"[A-Za-z0-9._:%-]+")


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
    password: str | None = field(default=None, repr=False)


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
    nodes = tuple(_node(part.strip()) for part in hosts.split(","))
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
    """`host`, `host:port`, `[v6]` or `[v6]:port`; nothing else (no spaces, no bare `:`)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise RedisUrlError(_NODE_PROBLEM)
        port = rest[1:] if rest else "6379"
    else:
        host, colon, port = text.partition(":")
        port = port if colon else "6379"
    if not host or not _HOST.fullmatch(host) or not _is_number(port) or not 0 < int(port) < 65536:
        raise RedisUrlError(_NODE_PROBLEM)
    return host, int(port)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone admits "²" and "٣"


def _database(segments: list[str], topology: str) -> int:
    if not segments:
        return 0
    if len(segments) > 1 or not _is_number(segments[0]):
        raise RedisUrlError("the path must be a database number, as in /0")
    if topology == "cluster" and segments[0] != "0":
        raise RedisUrlError("Redis Cluster has database 0 only")
    return int(segments[0])
