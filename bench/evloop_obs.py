# SPDX-License-Identifier: MIT
"""Python observer for bench/evloop_run.py: blocking next() or asyncio events()."""
import asyncio
import json
import sys
import time

import heirloom

mode, name, key, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lat, stamps = [], []
last, lagged = -1, 0


def take(ev):
    """A PUT's latency (value "INDEX STAMP"); the run ends at index n-1."""
    global last, lagged
    t = time.monotonic_ns()
    if ev.type == heirloom.EventType.LAGGED:
        lagged += ev.lagged
        return
    if ev.new is None:
        return
    i, stamp = ev.new.split()
    last = int(i)
    if ev.type == heirloom.EventType.PUT:
        lat.append(t - int(stamp))
    stamps.append(t)


with heirloom.Client(name) as c:
    c.observe(key)
    if mode == "py-asyncio":
        c.fileno()
    print("ready", flush=True)
    if mode == "py-blocking":
        while last < n - 1 and (ev := c.next(timeout=10)) is not None:
            take(ev)
    else:
        async def run():
            async for ev in c.events():
                take(ev)
                if last >= n - 1:
                    return
        asyncio.run(asyncio.wait_for(run(), 60))
lat.sort()
g = len(lat)
print(json.dumps({"events": g, "lagged": lagged, "p50_us": lat[g // 2] / 1e3, "p99_us": lat[g * 99 // 100] / 1e3,
                  "events_per_s": (last + 1) / ((stamps[-1] - stamps[0]) / 1e9)}))
