#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The ratios issue 16 asks for, from one run's summary.json, or several.

    bench/ratios.py bench/results/summary.json
    bench/ratios.py run1/summary.json run2/summary.json run3/summary.json

Every ratio compares rows of the same run (scripts/bench prints this at the
end). With several runs it gives each ratio's median over the runs and
their range. heirloom has two hops by design (publisher -> worker ->
observer), so its yardstick is the two-hop relay (bl_futex_ring relay-*),
not the one-hop ring; see bench/README.md, "Fair comparisons". A row that
is missing (a binary not built, --only) prints as "n/a". Latency ratios use
p50 and p99 of all repetitions merged; CPU ratios the median of the
repetitions' CPU per delivered message, every process involved (daemons
included).
"""
import json
import statistics
import sys

# (label, (scenario, variant, field, unit), (scenario, variant, field, unit), bar, lower?)
def _lat(sc, v, f):
    return (sc, v, f, "ns")


RATIOS = []
for _hv in ("heirloom", "heirloom-spin0"):
    for _f in ("p50", "p99"):
        RATIOS.append((f"steady {_hv} / relay-futex {_f}", _lat("steady", _hv, _f),
                       _lat("steady", "relay-futex", _f), 1.1, True))
    RATIOS.append((f"steady {_hv} / relay-futex CPU", _lat("steady", _hv, "cpu_ns"),
                   _lat("steady", "relay-futex", "cpu_ns"), 1.2, True))
for _fan in ("fanout8", "fanout64"):
    RATIOS.append((f"{_fan} heirloom / relay-futex p50 (last observer)",
                   _lat(_fan, "heirloom", "p50"), _lat(_fan, "relay-futex", "p50"), 1.1, True))
    RATIOS.append((f"{_fan} heirloom / uds p50 (last observer)", _lat(_fan, "heirloom", "p50"),
                   _lat(_fan, "uds", "p50"), 1.0, True))
    RATIOS.append((f"{_fan} heirloom / relay-futex CPU", _lat(_fan, "heirloom", "cpu_ns"),
                   _lat(_fan, "relay-futex", "cpu_ns"), None, True))
RATIOS += [
    ("burst heirloom / ring-futex msg/s (1->1 throughput)", ("burst", "heirloom", "p50", "msg/s"),
     ("burst", "ring-futex", "p50", "msg/s"), 1.0, False),
    # Context for the throughput bar (no bar of their own): what the
    # two-hop structure itself reaches against one hop, and heirloom
    # against that structure, in rate and in CPU per delivered message.
    ("burst relay-futex / ring-futex msg/s (two hops, no table)",
     ("burst", "relay-futex", "p50", "msg/s"), ("burst", "ring-futex", "p50", "msg/s"), None,
     False),
    ("burst heirloom / relay-futex msg/s", ("burst", "heirloom", "p50", "msg/s"),
     ("burst", "relay-futex", "p50", "msg/s"), None, False),
    ("burst heirloom / relay-futex CPU", ("burst", "heirloom", "cpu_ns", "msg/s"),
     ("burst", "relay-futex", "cpu_ns", "msg/s"), None, True),
    ("steady heirloom-busy / relay-spin p50 (busy mode)", _lat("steady", "heirloom-busy", "p50"),
     _lat("steady", "relay-spin", "p50"), 1.1, True),
    ("steady heirloom-busy / relay-spin CPU", _lat("steady", "heirloom-busy", "cpu_ns"),
     _lat("steady", "relay-spin", "cpu_ns"), None, True),
]

ROWS = [("steady", v) for v in ("ring-futex", "ring-spin", "relay-futex", "relay-spin", "uds",
                                "redis", "heirloom", "heirloom-spin0", "heirloom-busy")]
ROWS += [(f, v) for f in ("fanout8", "fanout64") for v in ("ring-futex", "relay-futex", "uds",
                                                           "redis", "heirloom", "heirloom-spin0",
                                                           "heirloom-busy")]


def load(path):
    with open(path) as f:
        rows = json.load(f)
    return {(r["scenario"], r["variant"], r["unit"]): r for r in rows}


def value(run, key):
    sc, v, field, unit = key
    r = run.get((sc, v, unit))
    if r is None or field not in r:
        return None
    return r[field]


def spread(vals, scale=1.0, unit=""):
    vals = [v / scale for v in vals if v is not None]
    if not vals:
        return "n/a"
    m = statistics.median(vals)
    if len(vals) == 1:
        return f"{m:.3g}{unit}"
    return f"{m:.3g}{unit} ({min(vals):.3g}-{max(vals):.3g})"


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = [load(p) for p in sys.argv[1:]]
    n = len(runs)
    print(f"\nissue 16 ratios ({'this run' if n == 1 else f'median of {n} runs (range)'}; "
          "latency p50/p99, CPU per delivered message)")
    for label, a, b, bar, lower in RATIOS:
        rs = []
        for run in runs:
            x, y = value(run, a), value(run, b)
            if x is not None and y:
                rs.append(x / y)
        verdict = ""
        if bar is not None and rs:
            m = statistics.median(rs)
            ok = m <= bar if lower else m >= bar
            verdict = f"  bar {'<=' if lower else '>='} {bar}: {'met' if ok else 'NOT met'}"
        print(f"  {label:<56} {spread(rs, unit='x'):>22}{verdict}")

    print("\nthe rows behind them (us; cpu = CPU-us per delivered message, all processes;"
          " daemons = its worker/keeper/relay-server part):")
    for sc, v in ROWS:
        p50 = [value(r, (sc, v, "p50", "ns")) for r in runs]
        if all(x is None for x in p50):
            continue
        p99 = [value(r, (sc, v, "p99", "ns")) for r in runs]
        cpu = [value(r, (sc, v, "cpu_ns", "ns")) for r in runs]
        dmn = [value(r, (sc, v, "cpu_daemon_ns", "ns")) for r in runs]
        print(f"  {sc + '/' + v:<24} p50 {spread(p50, 1e3):<20} p99 {spread(p99, 1e3):<22} "
              f"cpu {spread(cpu, 1e3):<20} daemons {spread(dmn, 1e3)}")
    for v in ("ring-futex", "relay-futex", "uds", "redis", "heirloom", "heirloom-spin0"):
        rate = [value(r, ("burst", v, "p50", "msg/s")) for r in runs]
        if all(x is None for x in rate):
            continue
        cpu = [value(r, ("burst", v, "cpu_ns", "msg/s")) for r in runs]
        dmn = [value(r, ("burst", v, "cpu_daemon_ns", "msg/s")) for r in runs]
        print(f"  {'burst/' + v:<24} {spread(rate, 1e6, ' M msg/s'):<36} "
              f"cpu {spread(cpu, 1e3):<20} daemons {spread(dmn, 1e3)}")
    for v in ("heirloom", "heirloom-spin0", "heirloom-busy"):
        idle = [value(r, ("idle", v, "p50", "ppm")) for r in runs]
        if any(x is not None for x in idle):
            vals = [x for x in idle if x is not None]
            ok = statistics.median(vals) <= 5000
            print(f"  idle/{v:<19} {spread(vals, 1e4, ' %')} of a core"
                  f"{'  bar <= 0.5 %: ' + ('met' if ok else 'NOT met') if v != 'heirloom-busy' else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
