# SPDX-License-Identifier: MIT
"""The Python package against a real worker (issue 15)."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import heirloom
from conftest import ctl


def test_values_round_trip_including_nul_bytes_and_str(worker):
    with heirloom.Client(worker.name, sync=True) as c:
        blob = bytes(range(256)) + b"\0\0end\0"
        c.publish(b"bin\0key", blob, meta=b"m\0eta")
        value, rev1 = c.get(b"bin\0key")
        assert value == blob and rev1 > 0
        c.publish("text", "héllo")
        assert c.get(b"text")[0] == "héllo".encode()
        c.publish("empty", b"")
        value, rev3 = c.get("empty")
        assert value == b"" and rev3 > rev1
        assert c.get("missing") is None
        assert sorted(c.keys()) == sorted([b"bin\0key", b"text", b"empty"])
        c.delete("text")
        assert c.get("text") is None
        assert c.stats()["keys"] == 2


def test_events_carry_every_field(worker):
    with heirloom.Client(worker.name, sync=True) as c:
        oid = c.observe("k")
        c.publish("k", b"v1", meta=b"who")
        c.publish("k", b"v\0 2")
        c.delete("k")
        e1, e2, e3 = (c.next(timeout=5) for _ in range(3))
        assert (e1.type, e1.key, e1.old, e1.new, e1.meta) == (
            heirloom.EventType.PUT, b"k", None, b"v1", b"who")
        assert e1.pid == os.getpid() and e1.observer == oid and e1.time > 0
        assert (e2.old, e2.new, e2.revision) == (b"v1", b"v\0 2", e1.revision + 1)
        assert (e3.type, e3.old, e3.new) == (heirloom.EventType.DELETE, b"v\0 2", None)
        assert c.next(timeout=0) is None
        c.unobserve(oid)


def test_prefix_observer_gets_keys_created_later(worker):
    with heirloom.Client(worker.name, sync=True) as c:
        oid = c.observe("sess/1/", prefix=True)
        c.publish("sess/1/a", b"x")
        c.publish("sess/2/a", b"y")
        c.publish("sess/1/b", b"z")
        # Two keys may be in two shards: no order between them.
        evs = sorted((c.next(timeout=5) for _ in range(2)), key=lambda e: e.key)
        assert [(e.observer, e.key, e.new) for e in evs] == [
            (oid, b"sess/1/a", b"x"), (oid, b"sess/1/b", b"z")]
        assert c.next(timeout=0) is None


def test_progress_event_follows_the_changes(worker):
    with heirloom.Client(worker.name, sync=True) as c:
        oid = c.observe("prog/k", progress_ms=20)
        c.publish("prog/k", b"x")
        e = c.next(timeout=5)
        assert e.type == heirloom.EventType.PUT and e.observer == oid
        while True:
            p = c.next(timeout=5)
            assert p.type == heirloom.EventType.PROGRESS and p.key == b"prog/k"
            if p.revision >= e.revision:
                break
        with pytest.raises(heirloom.InvalidArgumentError):
            c.observe("prog/k", progress_ms=5)


def test_errors_are_subclasses_with_code_and_name(worker):
    with heirloom.Client(worker.name, sync=True) as c:
        with pytest.raises(heirloom.InvalidArgumentError) as ei:
            c.publish(b"", b"x")
        assert ei.value.code == -22 and ei.value.name == "EINVAL"
        assert isinstance(ei.value, heirloom.Error)
        with pytest.raises(heirloom.Error):
            c.publish(b"k" * 300, b"x")
        with pytest.raises(heirloom.TooBigError):
            c.publish(b"k", b"x" * (1 << 20))
        with pytest.raises(TypeError):
            c.publish(b"k", 42)
    with pytest.raises(ValueError):
        c.get("k")  # closed
    with pytest.raises(heirloom.Error) as ei:
        heirloom.Client("no-such-segment-" + str(os.getpid()))
    assert ei.value.name == "ENOENT"


def test_python_observer_gets_events_from_a_c_publisher(worker):
    with heirloom.Client(worker.name) as c:
        c.observe("greeting")
        ctl(worker.name, "set", "greeting", "from-c")
        ev = c.next(timeout=5)
        assert ev.new == b"from-c" and ev.pid != os.getpid()


def test_c_observer_gets_events_from_a_python_publisher(worker):
    watch = subprocess.Popen([os.path.join(os.environ.get("HL_BIN", ""), "heirloomctl"),
                              "--name", worker.name, "watch", "pk", "--count", "1"],
                             stdout=subprocess.PIPE, text=True)
    with heirloom.Client(worker.name, sync=True) as c:
        end = time.monotonic() + 10
        while c.stats()["observers"] < 1 and time.monotonic() < end:
            time.sleep(0.02)
        c.publish("pk", "from-python")
    out, _ = watch.communicate(timeout=10)
    assert watch.returncode == 0 and "from-python" in out


def test_next_releases_the_gil(worker):
    with heirloom.Client(worker.name) as c, heirloom.Client(worker.name) as p:
        c.observe("g")
        got = []
        t = threading.Thread(target=lambda: got.append(c.next(timeout=10)))
        t.start()
        time.sleep(0.05)
        p.publish("g", "x")  # runs while the other thread waits in hl_next
        t.join(10)
        assert got and got[0].new == b"x"


def test_asyncio_events_with_a_timeout(worker):
    async def run():
        with heirloom.Client(worker.name) as c, heirloom.Client(worker.name) as p:
            c.observe("a")
            it = c.events()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(it.__anext__(), 0.2)
            it = c.events()
            p.publish("a", "1")
            ev = await asyncio.wait_for(it.__anext__(), 5)
            assert ev.new == b"1"
            await it.aclose()
    asyncio.run(run())


def test_catch_up_loses_nothing_while_the_history_holds_it(worker):
    with heirloom.Client(worker.name) as c, heirloom.Client(worker.name) as p:
        c.observe("lag")
        for i in range(1000):  # far more than a 32 KiB event ring holds
            p.publish("lag", b"%04d" % i + b"x" * 64)
        p.flush(5)
        got = []
        while (ev := c.next(timeout=0.5)) is not None:
            got.append(ev)
        assert [e.type for e in got] == [heirloom.EventType.PUT] * 1000
        assert [e.new[:4] for e in got] == [b"%04d" % i for i in range(1000)]


def test_lagged_and_resync_surface_as_events_past_the_history(worker):
    with heirloom.Client(worker.name) as c, heirloom.Client(worker.name) as p:
        c.observe("lag")
        for i in range(1000):  # 2 MB: more than the 1 MiB history holds
            p.publish("lag", b"%04d" % i + b"x" * 2000)
        p.flush(5)
        types = []
        while (ev := c.next(timeout=0.5)) is not None:
            types.append(ev)
        kinds = [e.type for e in types]
        assert heirloom.EventType.LAGGED in kinds
        i = kinds.index(heirloom.EventType.LAGGED)
        assert types[i].lagged > 0 and kinds[i + 1] == heirloom.EventType.RESYNC
        assert types[-1].new.startswith(b"0999")


def test_sigkilled_python_process_loses_its_observers_at_once(worker):
    code = textwrap.dedent(f"""
        import heirloom, sys, time
        c = heirloom.Client({worker.name!r})
        for i in range(5):
            c.observe("k%d" % i)
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    with heirloom.Client(worker.name) as c:
        assert c.stats()["observers"] == 5
        child.send_signal(signal.SIGKILL)
        child.wait()
        end = time.monotonic() + 5  # a bound, not a timing assertion
        while c.stats()["observers"] and time.monotonic() < end:
            time.sleep(0.01)
        assert c.stats()["observers"] == 0


def test_worker_sigkill_during_async_for_loses_nothing(worker):
    async def run():
        with heirloom.Client(worker.name) as c, heirloom.Client(worker.name) as p:
            c.observe("n")
            got = []

            async def consume():
                async for ev in c.events():
                    got.append(int(ev.new))
                    if len(got) == 30:
                        return

            task = asyncio.create_task(consume())
            for i in range(30):
                p.publish("n", str(i))  # queued in shared memory, worker or not
                if i % 10 == 5:
                    await asyncio.sleep(0.05)
                    worker.kill9()
                    await asyncio.sleep(0.05)
                    worker.start()
            await asyncio.wait_for(task, 30)
            assert got == list(range(30))
    asyncio.run(run())


def test_compare_and_set_applies_on_match_and_raises_conflict_otherwise(worker):
    with heirloom.Client(worker.name) as c:
        r1 = c.publish_if("cas", b"1", 0)  # 0: only if the key has no value
        assert r1 > 0
        with pytest.raises(heirloom.ConflictError) as e:
            c.publish_if("cas", b"x", 0)
        assert e.value.revision == r1 and e.value.name == "HL_ECONFLICT"
        assert c.get("cas") == (b"1", r1)  # the conflict changed nothing
        r2 = c.publish_if("cas", b"2", r1, meta=b"m")
        assert r2 > r1
        with pytest.raises(heirloom.ConflictError) as e:
            c.delete_if("cas", r1)
        assert e.value.revision == r2
        c.delete_if("cas", r2)
        assert c.get("cas") is None


def test_observe_filters_deliver_only_what_was_asked(worker):
    with heirloom.Client(worker.name) as obs, heirloom.Client(worker.name, sync=True) as pub:
        puts = obs.observe("f", puts_only=True, no_old=True)
        dels = obs.observe("f", deletes_only=True)
        with pytest.raises(heirloom.InvalidArgumentError):
            obs.observe("f", puts_only=True, deletes_only=True)
        pub.publish("f", b"a")
        pub.publish("f", b"b")
        pub.delete("f")
        got = []
        while (ev := obs.next(timeout=5)) is not None:
            got.append((ev.observer, ev.type, ev.old, ev.new))
            if ev.type == heirloom.EventType.DELETE:
                break
        assert got == [
            (puts, heirloom.EventType.PUT, None, b"a"),
            (puts, heirloom.EventType.PUT, None, b"b"),
            (dels, heirloom.EventType.DELETE, b"b", None),
        ]


def test_observe_start_rev_resumes_and_compacted_carries_the_oldest(worker):
    with heirloom.Client(worker.name, sync=True) as c:
        c.publish("r/k", b"a")
        _, r1 = c.get("r/k")
        c.publish("r/k", b"b")
        c.publish("r/k", b"c")
        oid = c.observe("r/k", start_rev=r1)
        evs = [c.next(timeout=5) for _ in range(2)]
        assert [(e.observer, e.new, e.old) for e in evs] == [(oid, b"b", None),
                                                              (oid, b"c", None)]
        poid = c.observe("r/", prefix=True, start_rev=r1)
        assert [c.next(timeout=5).new for _ in range(2)] == [b"b", b"c"]
        c.publish("r/k", b"live")
        got = {(e.observer, e.new) for e in (c.next(timeout=5), c.next(timeout=5))}
        assert got == {(oid, b"live"), (poid, b"live")}
        # Overrun the key's shard's history (1 MiB) with 4 KB values.
        for i in range(300):
            c.publish("r/k", bytes([65 + i % 26]) * 4000)
        with pytest.raises(heirloom.CompactedError) as ei:
            c.observe("r/k", start_rev=r1)
        assert ei.value.name == "HL_ECOMPACTED" and ei.value.oldest_revision > r1
        c.observe("r/k", start_rev=ei.value.oldest_revision)  # accepted


def _wait(pred, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _durable(name):
    r = ctl(name, "--json", "status", check=False)
    if r.returncode != 0:
        return None
    import json
    return json.loads(r.stdout).get("durability", {}).get("durable")


def test_sync_publish_raises_not_durable_error_when_the_log_fails(tmp_path):
    """--durability log with the state directory failing (tests/faultfs.c,
    EIO): a sync publish is applied (observers and get() see it) and raises
    NotDurableError; once the fault clears, publishes are durable again."""
    shim = os.environ.get("HL_FAULTFS")
    assert shim and os.path.exists(shim), "ctest passes HL_FAULTFS (the LD_PRELOAD shim)"
    bindir = os.environ.get("HL_BIN", "")
    name = f"pydur{os.getpid()}"
    state, fault = tmp_path / "state", tmp_path / "fault"
    fault.write_text("")
    env = dict(os.environ, LD_PRELOAD=shim, HL_FAULT_CTL=str(fault), HL_FAULT_DIR=str(state))
    # Under ASan the shim precedes the runtime in the link order.
    env["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                "verify_asan_link_order=0"]))
    from conftest import SMALL
    keeper = subprocess.Popen(
        [os.path.join(bindir, "heirloom-keeper"), "--name", name, "--foreground",
         "--socket", str(tmp_path / "k.sock"), "--durability", "log",
         "--state-dir", str(state), "--spawn-worker=" + os.path.join(bindir, "heirloom-worker"),
         *SMALL], env=env, stderr=subprocess.DEVNULL)
    try:
        assert _wait(lambda: ctl(name, "status", check=False).returncode == 0)
        with heirloom.Client(name, sync=True) as c:
            c.publish("before", "1")
            assert _wait(lambda: _durable(name) is True)
            fault.write_text("eio")
            with pytest.raises(heirloom.NotDurableError) as ei:
                c.publish("during", "2")
            assert ei.value.code == -20010 and ei.value.name == "HL_ENOTDURABLE"
            assert c.get("during")[0] == b"2"  # applied in memory all the same
            assert _wait(lambda: _durable(name) is False)
            assert keeper.poll() is None
            fault.write_text("")
            assert _wait(lambda: _durable(name) is True, 20)
            c.publish("after", "3")  # durable again: no exception
    finally:
        keeper.terminate()
        try:
            keeper.wait(10)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait()
        try:
            os.unlink(f"/dev/shm/heirloom.{name}")
        except FileNotFoundError:
            pass
