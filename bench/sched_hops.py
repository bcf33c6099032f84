#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Where a paced message's time goes, from the scheduler's events.

    perf sched record -a -o sched.data -- sleep 0.3   # while a steady run runs
    perf sched script -i sched.data | bench/sched_hops.py PUBLISHER_PID

For each wake-up along the path of a message (the publisher waking the
next hop, that hop waking the consumer ...) it prints how many there were
and the medians of: the wake-up itself (sched_waking -> the wakee runs),
how long the wakee ran before it woke the next one, and how often the
wakee ran on another CPU than its waker. Hops are named by command and
how far down the path they are (#1 woken by the publisher, #2 by #1); the
chain starts at PUBLISHER_PID (the bench binary) and follows wakes made by
a task within 1 ms of being woken. docs/performance.md has what it showed.
"""
import re
import statistics
import sys

EV = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<t>[\d.]+):\s+"
                r"sched:(?P<ev>sched_waking|sched_switch):\s+(?P<rest>.*)$")
WAKE = re.compile(r"comm=(?P<comm>.+?) pid=(?P<pid>\d+) prio=\d+ target_cpu=(?P<cpu>\d+)")
SWITCH = re.compile(r"==> next_comm=(?P<comm>.+?) next_pid=(?P<pid>\d+) ")


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pub = int(sys.argv[1])
    woken = {}    # tid -> (time woken, waker tid, waker cpu, target cpu)
    running = {}  # tid -> (time it started running after a tracked wake, hop name)
    comm = {pub: "publisher"}
    on_path = {pub}
    hops = {}     # (waker name, wakee name) -> lists
    for line in sys.stdin:
        m = EV.match(line)
        if not m:
            continue
        t, tid, cpu = float(m["t"]) * 1e6, int(m["tid"]), int(m["cpu"])
        if m["ev"] == "sched_waking":
            w = WAKE.search(m["rest"])
            if not w:
                continue
            target = int(w["pid"])
            if tid not in on_path or target in (tid, pub):
                continue
            # A hop we follow: the waker is the publisher or ran because
            # of a tracked wake-up less than 1 ms ago.
            if tid != pub and (tid not in running or t - running[tid][0] > 1000):
                continue
            depth = comm[tid].split("#")[1] if "#" in comm[tid] else "0"
            comm.setdefault(target, f"{w['comm']}#{int(depth) + 1}")
            on_path.add(target)
            woken[target] = (t, tid, cpu, int(w["cpu"]))
            if tid in running:
                key = (comm[tid], comm[target])
                hops.setdefault(key, {"wake": [], "ran": [], "cross": 0, "n": 0})
                hops[key]["ran"].append(t - running[tid][0])
        else:
            s = SWITCH.search(m["rest"])
            if not s:
                continue
            nxt = int(s["pid"])
            if nxt in woken:
                tw, waker, wcpu, _ = woken.pop(nxt)
                key = (comm[waker], comm[nxt])
                h = hops.setdefault(key, {"wake": [], "ran": [], "cross": 0, "n": 0})
                h["wake"].append(t - tw)
                h["n"] += 1
                h["cross"] += cpu != wcpu
                running[nxt] = (t, key)
    print(f"{'waker -> wakee':<40} {'n':>6} {'wake p50 us':>12} {'wake p90':>9} "
          f"{'other cpu':>9}   then the waker had run (p50 us) before it woke the wakee")
    for (a, b), h in sorted(hops.items(), key=lambda kv: -kv[1]["n"]):
        if h["n"] < 10:
            continue
        w = sorted(h["wake"])
        ran = f"{statistics.median(h['ran']):.1f}" if h["ran"] else "-"
        print(f"{a + ' -> ' + b:<40} {h['n']:>6} {statistics.median(w):>12.1f} "
              f"{w[int(len(w) * 0.9)]:>9.1f} {h['cross'] / h['n']:>9.0%}   {ran}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
