#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The ratios issue 16 asks for, from one run's summary.json.

    bench/ratios.py bench/results/summary.json

Every ratio compares rows of the same run (scripts/bench prints this at the
end). heirloom has two hops by design (publisher -> worker -> observer), so
its yardstick is the two-hop relay (bl_futex_ring relay-*), not the one-hop
ring; see bench/README.md, "Fair comparisons". A row that is missing (a
binary not built, --only) prints as "n/a". Latency ratios use p50 and p99
of all repetitions merged; CPU ratios the median of the repetitions' CPU
per delivered message, every process involved (daemons included).
"""
import json
import sys


def load(path):
    with open(path) as f:
        rows = json.load(f)
    by = {}
    for r in rows:
        key = (r["scenario"], r["variant"], r["unit"])
        by[key] = r
    return by


def fmt(x, unit=""):
    if x is None:
        return "n/a"
    return f"{x:.3g}{unit}"


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    by = load(sys.argv[1])

    def get(scenario, variant, field, unit="ns"):
        r = by.get((scenario, variant, unit))
        if r is None or field not in r:
            return None
        return r[field]

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    lines = []

    def line(what, a, b, bar=None, lower_is_better=True):
        r = ratio(a, b)
        verdict = ""
        if bar is not None and r is not None:
            ok = r <= bar if lower_is_better else r >= bar
            verdict = f"  (bar {'<=' if lower_is_better else '>='} {bar}: " \
                      f"{'met' if ok else 'NOT met'})"
        lines.append(f"  {what:<58} {fmt(r, 'x'):>8}{verdict}")

    us = 1e3
    print("\nissue 16 ratios (this run; p50/p99 in us, CPU in us per delivered message)")
    for hv in ("heirloom", "heirloom-spin0"):
        for field, bar in (("p50", 1.1), ("p99", 1.1)):
            line(f"steady {hv} / relay-futex {field}",
                 get("steady", hv, field), get("steady", "relay-futex", field), bar)
        line(f"steady {hv} / relay-futex CPU",
             get("steady", hv, "cpu_ns"), get("steady", "relay-futex", "cpu_ns"), 1.2)
    for fan in ("fanout8", "fanout64"):
        line(f"{fan} heirloom / relay-futex p50 (last observer)",
             get(fan, "heirloom", "p50"), get(fan, "relay-futex", "p50"), 1.1)
        line(f"{fan} heirloom / uds p50 (last observer)",
             get(fan, "heirloom", "p50"), get(fan, "uds", "p50"), 1.0)
    line("burst heirloom / ring-futex msg/s (1->1 throughput)",
         get("burst", "heirloom", "p50", "msg/s"), get("burst", "ring-futex", "p50", "msg/s"),
         1.0, lower_is_better=False)
    line("steady heirloom-busy / relay-spin p50 (busy mode)",
         get("steady", "heirloom-busy", "p50"), get("steady", "relay-spin", "p50"), 1.1)
    line("steady heirloom-busy / relay-spin CPU",
         get("steady", "heirloom-busy", "cpu_ns"), get("steady", "relay-spin", "cpu_ns"))
    print("\n".join(lines))

    print("\nthe rows behind them:")
    for sc, v in (("steady", "ring-futex"), ("steady", "relay-futex"), ("steady", "relay-spin"),
                  ("steady", "uds"), ("steady", "redis"), ("steady", "heirloom"),
                  ("steady", "heirloom-spin0"), ("steady", "heirloom-busy"),
                  ("fanout8", "relay-futex"), ("fanout8", "uds"), ("fanout8", "heirloom"),
                  ("fanout64", "relay-futex"), ("fanout64", "uds"), ("fanout64", "heirloom")):
        p50, p99 = get(sc, v, "p50"), get(sc, v, "p99")
        cpu, dmn = get(sc, v, "cpu_ns"), get(sc, v, "cpu_daemon_ns")
        lo, hi = get(sc, v, "cpu_min_ns"), get(sc, v, "cpu_max_ns")
        if p50 is None:
            continue
        print(f"  {sc + '/' + v:<26} p50 {fmt(p50 / us):>7}  p99 {fmt(p99 / us):>7}  "
              f"cpu {fmt(cpu / us if cpu is not None else None):>6} "
              f"({fmt(lo / us if lo is not None else None)}-"
              f"{fmt(hi / us if hi is not None else None)}; daemons "
              f"{fmt(dmn / us if dmn is not None else None)})  spread "
              f"{get(sc, v, 'spread')}")
    idle = get("idle", "heirloom", "p50", "ppm")
    if idle is not None:
        verdict = "met" if idle <= 5000 else "NOT met"
        print(f"\n  idle worker: {idle / 1e4:.3f} % of a core (bar <= 0.5 %: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
