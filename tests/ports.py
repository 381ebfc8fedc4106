"""Loopback ports for servers a test starts in another process (or leaves dead on purpose).

A port the OS picks (bind to 0) comes from its ephemeral range (32768-60999 on Linux), and
between our picking it and the server binding it, any server of another pytest-xdist worker
that binds to 0 may take it: the test would then talk to a stranger. So these ports come
from below that range, from a block of `BLOCK` ports per worker that no other worker and no
bind-to-0 ever uses: worker gwN takes block N, shifted by `SNAPGRAPH_TEST_PORT_BLOCKS_BELOW`
(the lowest-versions run's own workers take the blocks after the parent's). Redis Cluster's
bus port (port + 10000) stays below the ephemeral range too.
"""

from __future__ import annotations

import itertools
import os
import socket

FIRST = 20_000
BLOCK = 250
BLOCKS = 10  # the last block ends at 22,500; its bus ports at 32,500 < 32,768
SHIFT_ENV = "SNAPGRAPH_TEST_PORT_BLOCKS_BELOW"


def _block() -> int:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    block = worker + int(os.environ.get(SHIFT_ENV, "0"))
    assert block < BLOCKS, f"port block {block}: at most {BLOCKS} workers in all"
    return block


_OFFSETS = itertools.cycle(range(BLOCK))


def free_port(*, with_bus: bool = False) -> int:
    """A port of this worker's block that nothing is bound to (nor, `with_bus`, port + 10000).
    Handed out in turn, so a port one test just left is the last to come back."""
    first = FIRST + _block() * BLOCK
    for _ in range(BLOCK):
        port = first + next(_OFFSETS)
        if _bindable(port) and (not with_bus or _bindable(port + 10_000)):
            return port
    raise RuntimeError(f"no free port in {first}-{first + BLOCK - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        # As the servers bind: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
