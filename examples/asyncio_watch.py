#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""examples/asyncio_watch.py: heirloom in an asyncio program.

    asyncio_watch.py NAME KEY [COUNT]

Observes KEY and prints each change until COUNT events came, inside an
asyncio loop that could be doing anything else meanwhile: the client's
descriptor (hl_fd) is watched with loop.add_reader, no thread is started.
"""
import asyncio
import sys

import heirloom


async def main(name: str, key: str, count: int) -> None:
    with heirloom.Client(name) as c:
        c.observe(key)
        print("ready", flush=True)
        seen = 0
        async for ev in c.events():
            if ev.type == heirloom.EventType.PUT:
                print(f"{ev.key.decode()} = {ev.new.decode()} (revision {ev.revision})",
                      flush=True)
            seen += 1
            if 0 <= count <= seen:
                break


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} NAME KEY [COUNT]")
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else -1))
