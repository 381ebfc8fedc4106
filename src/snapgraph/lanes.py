"""Big-list work takes turns, so that small requests do not queue behind all of it at once.

The event loop runs ready callbacks in order. Four requests each checking or building a
10,000-item list in slices would each have a slice ready at every turn, and a small request
would wait for all four slices. Inside `heavy_lane()` only one of them works at a time (the
others wait on the lane, not in the ready queue), so a small request waits for one slice at
most. Work on lists of up to `SLICE` items never enters the lane.

    async with heavy_lane():
        for chunk in slices(rows):
            ...
            await asyncio.sleep(0)
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

# Items checked or built between two turns of the event loop (a few milliseconds of work).
SLICE = 1_000

_LANES: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


def heavy_lane() -> asyncio.Semaphore:
    """The running loop's lane (one per loop: a semaphore belongs to the loop it waits on)."""
    loop = asyncio.get_running_loop()
    lane = _LANES.get(loop)
    if lane is None:
        lane = _LANES[loop] = asyncio.Semaphore(1)
    return lane
