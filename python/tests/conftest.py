# SPDX-License-Identifier: MIT
"""Fixtures: a standalone worker on a fresh segment per test (HL_BIN from ctest)."""
import os
import signal
import subprocess
import time

import pytest

BIN = os.environ.get("HL_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
SMALL = ["--max-keys", "1024", "--max-observers", "4096", "--max-endpoints", "16",
         "--heap", "1048576", "--req-ring", "16384", "--ev-ring", "32768"]
_n = 0


def ctl(name, *args, check=True):
    return subprocess.run([os.path.join(BIN, "heirloomctl"), "--name", name, *args],
                          check=check, capture_output=True, text=True)


class Worker:
    def __init__(self, name):
        self.name = name
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([os.path.join(BIN, "heirloom-worker"), "--standalone",
                                      "--name", self.name, *SMALL],
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if ctl(self.name, "status", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("worker did not come up")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def worker():
    global _n
    _n += 1
    name = f"py{os.getpid()}_{_n}"
    w = Worker(name)
    yield w
    if w.proc.poll() is None:
        w.kill9()
    try:
        os.unlink(f"/dev/shm/heirloom.{name}")
    except FileNotFoundError:
        pass
