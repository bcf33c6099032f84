#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/evloop_run.py: event-loop and Python observers side by side (issue 15).

    /usr/bin/python3 bench/evloop_run.py BUILD_DIR [--n N] [--interval-us US]

For each observer kind (C hl_next, C hl_fd+epoll, Python blocking next(),
Python asyncio events()) on one standalone worker: a paced run (one publish
every INTERVAL_US, the same pacing for every row: latency p50/p99) and a
burst run (events/s), each with the CPU time of every process (worker,
publisher, observer) per delivered message.
"""
import json
import os
import subprocess
import sys
import time

build = os.path.abspath(sys.argv[1])
args = sys.argv[2:]
N = int(args[args.index("--n") + 1]) if "--n" in args else 5000
IV = int(args[args.index("--interval-us") + 1]) if "--interval-us" in args else 500
BIN = os.path.join(build, "bin")
EV = os.path.join(build, "bench", "evloop") if os.path.exists(
    os.path.join(build, "bench", "evloop")) else os.path.join(BIN, "evloop")
HERE = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, PYTHONPATH=os.path.join(build, "python"))


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def run(kind, name, interval):
    obs_cmd = ([EV, kind, name, "k", str(N)] if kind.startswith("obs") else
               ["/usr/bin/python3", os.path.join(HERE, "evloop_obs.py"), kind, name, "k", str(N)])
    obs = subprocess.Popen(obs_cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert obs.stdout.readline().strip() == "ready"
    pub = subprocess.Popen([EV, "pub", name, "k", str(N), str(interval)])
    w0 = cpu(worker.pid)
    _, _, ru_pub = os.wait4(pub.pid, 0)
    line = obs.stdout.readline()
    _, _, ru_obs = os.wait4(obs.pid, 0)
    w1 = cpu(worker.pid)
    r = json.loads(line)
    r["cpu_us_per_msg"] = {
        "worker": round((w1 - w0) / N * 1e6, 2),
        "publisher": round((ru_pub.ru_utime + ru_pub.ru_stime) / N * 1e6, 2),
        "observer": round((ru_obs.ru_utime + ru_obs.ru_stime) / N * 1e6, 2)}
    r["cpu_us_per_msg"]["all"] = round(sum(r["cpu_us_per_msg"].values()), 2)
    return r


name = f"evb{os.getpid()}"
worker = subprocess.Popen([os.path.join(BIN, "heirloom-worker"), "--standalone", "--name", name],
                          stderr=subprocess.DEVNULL)
time.sleep(0.5)
print(f"load: {open('/proc/loadavg').read().strip()}  n={N} paced every {IV} us")
print(f"{'observer':<12} {'paced p50':>10} {'p99 us':>8} {'cpu us/msg (w/pub/obs)':>26}   "
      f"{'burst ev/s':>10} {'cpu us/msg (worker/pub/obs)':>28}")
try:
    for kind in ["obs-next", "obs-epoll", "py-blocking", "py-asyncio"]:
        p = run(kind, name, IV)
        b = run(kind, name, 0)
        cb = b["cpu_us_per_msg"]
        cp = p["cpu_us_per_msg"]
        print(f"{kind:<12} {p['p50_us']:>10.1f} {p['p99_us']:>8.1f} "
              f"{cp['all']:>8.2f} ({cp['worker']}/{cp['publisher']}/{cp['observer']})"
              f"   {b['events_per_s']:>10.0f} "
              f"{cb['all']:>8.2f} ({cb['worker']}/{cb['publisher']}/{cb['observer']})"
              f"  lagged {b['lagged']}",
              flush=True)
finally:
    worker.kill()
    worker.wait()
    os.unlink(f"/dev/shm/heirloom.{name}")
