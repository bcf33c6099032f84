#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""mkseeds.py: writes the hand-made seed inputs of fuzz_request, fuzz_events
and fuzz_config into corpus/<target>/ (fuzz_attach's come from real segments:
mkseeds.sh). Formats: see the comment at the top of each fuzz_<t>.c.
Rerun after changing a format; the files are checked in."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def align8(b):
    return b + b"\0" * (-len(b) % 8)


# ---- requests (struct hl_req: size, type, key_len, val_len, meta_len, flags, arg, ts)
def req(typ, key=b"", meta=b"", val=b"", arg=0, size=None):
    body = key + meta + val
    n = (32 + len(body) + 7) & ~7
    hdr = struct.pack("<IHHIHHQQ", size if size is not None else n, typ, len(key), len(val),
                      len(meta), 0, arg, 12345)
    return align8(hdr + body)


def pad(n):
    return struct.pack("<IHH", n, 0, 0) + b"\0" * (n - 8)


def req_input(ring, shards=1, maxv=2, tail=0, head_delta=None, shard=0, want=4):
    if head_delta is None:
        head_delta = len(ring)
    return (bytes([shards - 1, maxv]) + struct.pack("<QI", tail, head_delta) +
            bytes([shard, want]) + ring)


PUB, DEL, OBS, UNOBS, CLOSE = 1, 2, 3, 4, 5
put("request", "publish", req_input(req(PUB, b"key", b"meta", b"value")))
put("request", "mixed", req_input(
    req(OBS, b"k1") + req(PUB, b"k1", b"", b"v" * 40) + req(DEL, b"k1") +
    req(UNOBS, arg=(7 << 24) | 3) + req(CLOSE)))
put("request", "max_sizes", req_input(req(PUB, b"K" * 255, b"M" * 256, b"V" * 64), maxv=2))
put("request", "wrap_pad", req_input(pad(16) + req(PUB, b"w", b"", b"x"), tail=65536 - 16 + (1 << 40)))
put("request", "near_u64_max", req_input(req(PUB, b"a", b"", b"b"), tail=(1 << 64) - 8))
put("request", "bad_size", req_input(req(PUB, b"k", size=12)))
put("request", "impossible_head", req_input(req(PUB, b"k"), head_delta=0xffffff))
put("request", "unaligned_head", req_input(req(PUB, b"k"), head_delta=13))
put("request", "empty", req_input(b""))


# ---- events (struct hl_evrec: size, type, key_len, nobs, pub_pid, old_len, new_len,
#      meta_len, pad0, pad1, rev, ts), then ids, key, meta, old, new
NO = 0xffffffff
PUT, EDEL = 16, 17
IDS = [(1 << 24) | 2, (2 << 24) | 3, (3 << 24) | 4]  # what the mini worker hands out


def ev(typ, ids, key, meta=b"", old=None, new=None, rev=1, size=None):
    body = b"".join(struct.pack("<Q", i) for i in ids) + key + meta + (old or b"") + (new or b"")
    n = (48 + len(body) + 7) & ~7
    hdr = struct.pack("<IHHIIIIHHIQQ", size if size is not None else n, typ, len(key), len(ids),
                      4242, NO if old is None else len(old), NO if new is None else len(new),
                      len(meta), 0, 0, rev, 777)
    return align8(hdr + body)


def chunk(ctl, b):
    return bytes([ctl]) + struct.pack("<H", len(b)) + b


def ev_input(chunks, nobs=3, req_base=0, ev_base=0):
    return struct.pack("<QQ", req_base, ev_base) + bytes([nobs]) + b"".join(chunks)


put("events", "put_all", ev_input([chunk(8, ev(PUT, IDS, b"k0", b"m", None, b"v1", rev=5))]))
put("events", "put_then_delete", ev_input([
    chunk(0, ev(PUT, IDS[:1], b"k0", b"", None, b"a", rev=1)),
    chunk(1, ev(PUT, IDS[1:], b"k1", b"", b"x", b"bb", rev=2)),
    chunk(8, ev(EDEL, IDS, b"k0", b"", b"a", None, rev=3))]))
put("events", "duplicate_rev", ev_input([
    chunk(0, ev(PUT, IDS, b"k", b"", None, b"1", rev=9)),
    chunk(8, ev(PUT, IDS, b"k", b"", None, b"1", rev=9))]))
put("events", "lag_resync", ev_input([
    chunk(0, ev(PUT, IDS[:1], b"k0", b"", None, b"v", rev=2)),
    chunk(4 | 8 | (3 << 4), b""),
    chunk(4 | 8 | (1 << 3) | (1 << 4), b"")]))
put("events", "wrap", ev_input([chunk(8, pad(24) + ev(PUT, IDS, b"w", b"", None, b"z", rev=4))],
                               ev_base=4096 - 24 + (1 << 33)))
put("events", "bad_nobs", ev_input([chunk(8, ev(PUT, IDS, b"k", size=56))]))
put("events", "impossible_head", ev_input([chunk(2 | 8, struct.pack("<I", 0x7fffffff))]))
put("events", "unknown_ids", ev_input([chunk(8, ev(PUT, [99, 100], b"k", b"", None, b"v"))], nobs=1))
put("events", "max_sizes", ev_input([chunk(8, ev(PUT, IDS, b"K" * 255, b"M" * 256, b"o" * 64,
                                               b"n" * 64, rev=8))]))

# ---- config files (a first byte < 8 would be an argv count; these start with text)
put("config", "full", b"""# heirloom
shards = 8
[heirloom]
mode = 0640
timeout = 2m
segment-size = 16M
[keeper]
foreground = yes
socket = /run/heirloom/x.sock
label = a label
[worker]
anything = goes
""")
put("config", "bad_value", b"[keeper]\nshards = 99999\n")
put("config", "dup", b"[keeper]\nmode = 0600\nmode = 0666\n")
put("config", "unknown", b"[nope]\nx = 1\n")
put("config", "syntax", b"[keeper\nshards 3\n")
put("config", "long_line", b"label = " + b"x" * 300 + b"\n")
put("config", "sizes", b"segment-size = 2g\ntimeout = 250ms\n")
put("config", "argv", bytes([3]) + b"--shards=4\0-fno\0--spawn-worker\0" + b"shards = 2\n")
put("config", "help", bytes([1]) + b"--help\0")
put("config", "bool_flags", bytes([2]) + b"--no-foreground\0-l\0" + b"[keeper]\nforeground=on\n")
