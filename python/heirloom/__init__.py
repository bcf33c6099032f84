# SPDX-License-Identifier: MIT
"""heirloom: a shared-memory observer table for processes on one machine.

A thin binding of libheirloom (``include/heirloom/heirloom.h`` is the
contract; each method names the C call it is). Processes publish small keyed
values; observers are told, in order, when a value changes::

    import heirloom

    with heirloom.Client("demo") as c:
        c.observe("greeting")
        c.publish("greeting", "hello")
        ev = c.next(timeout=1.0)          # Event(type=PUT, key=b'greeting', ...)

    async def watch():                    # asyncio, through hl_fd()
        with heirloom.Client("demo") as c:
            c.observe(b"greeting")
            async for ev in c.events():
                print(ev.key, ev.new)

Keys and values are ``bytes`` (``str`` is encoded as UTF-8); any byte,
NUL included, round-trips. Errors raise :class:`Error` subclasses that
carry the C code (``.code``, negative) and its name (``.name``, from
``hl_err_name``). Calls that wait release the GIL.
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import AsyncIterator, Dict, List, Optional, Tuple, Union

from . import _heirloom

__all__ = [
    "Client", "Event", "EventType", "Error", "TimeoutError", "WouldBlockError",
    "InvalidArgumentError", "NoSpaceError", "TooBigError", "StaleError",
    "CorruptError", "FormatError", "PermissionError", "NoWorkerError",
    "ConflictError", "CompactedError", "NotDurableError",
]

Bytesish = Union[bytes, bytearray, memoryview, str]


class Error(Exception):
    """A libheirloom call failed. ``code`` is its negative return value
    (``-errno`` or ``HL_E*``), ``name`` its ``hl_err_name`` ("ENOSPC")."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.name = _heirloom.err_name(code)
        super().__init__(f"{_heirloom.strerror(code)} ({self.name})")


class TimeoutError(Error):
    """-ETIMEDOUT: a worker took the request but did not answer in time; it
    will be applied exactly once (the call is "in doubt")."""


class WouldBlockError(Error):
    """-EAGAIN: nothing was done (no worker took the request in time, or a
    full ring with ``nowait``); safe to retry."""


class InvalidArgumentError(Error, ValueError):
    """-EINVAL: a bad key (empty, over 255 bytes), id or option."""


class NoSpaceError(Error):
    """-ENOSPC: a pool (keys, observers, endpoints, value heap) is full."""


class TooBigError(Error, ValueError):
    """-EMSGSIZE: a value or metadata over the segment's limits."""


class StaleError(Error):
    """HL_ESTALE: the worker removed this client's endpoint."""


class CorruptError(Error):
    """HL_ECORRUPT: a structure in the segment failed validation."""


class FormatError(Error):
    """HL_EBADMAGIC, HL_EVERSION, HL_ETRUNCATED: not a segment this library reads."""


class PermissionError(Error):
    """-EPERM, -EACCES, HL_EUNTRUSTED (for hl_fd(): the worker may not take
    its copy of the descriptor; see heirloom.h)."""


class NoWorkerError(Error):
    """HL_ENOWORKER: no worker serves the table."""


class ConflictError(Error):
    """HL_ECONFLICT: a compare-and-set found another revision; nothing
    changed. ``revision`` is the key's current one (0: it has no value)."""

    def __init__(self, code: int, revision: int = 0) -> None:
        super().__init__(code)
        self.revision = revision


class CompactedError(Error):
    """HL_ECOMPACTED: ``observe(..., start_rev=R)`` but the history no
    longer reaches R; no observer was added. ``oldest_revision`` is the
    smallest ``start_rev`` the history accepts now."""

    def __init__(self, code: int, oldest_revision: int = 0) -> None:
        super().__init__(code)
        self.oldest_revision = oldest_revision


class NotDurableError(Error):
    """HL_ENOTDURABLE: a client opened ``sync=True`` with the keeper in
    ``--durability log``: the change was applied in memory (observers get
    it) but not confirmed on disk; a power loss may lose it."""


_ERRNO = {
    -110: TimeoutError, -11: WouldBlockError, -22: InvalidArgumentError,
    -28: NoSpaceError, -90: TooBigError, -20005: StaleError, -20003: CorruptError,
    -20001: FormatError, -20002: FormatError, -20006: FormatError,
    -1: PermissionError, -13: PermissionError, -20007: PermissionError,
    -20004: NoWorkerError, -20008: ConflictError, -20009: CompactedError,
    -20010: NotDurableError,
}

#: ``observe()`` filters (``HL_OBSERVE_*``).
NOPUT = 0x1
NODELETE = 0x2
NOOLD = 0x4


def _error_for(code: int) -> Error:
    return _ERRNO.get(code, Error)(code)


_heirloom.set_error_factory(_error_for)


class EventType(enum.IntEnum):
    """``enum hl_event_type``."""
    PUT = 1
    DELETE = 2
    LAGGED = 3   #: events were dropped for this observer (``lagged`` of them)
    RESYNC = 4   #: the key's current state right after a LAGGED
    PROGRESS = 5  #: current as of ``revision``: every change up to it came before


@dataclass(frozen=True)
class Event:
    """One change seen by one observer (``struct hl_event``).

    ``old``/``new`` are None when there was no old value (or for RESYNC) /
    for a DELETE. ``time`` is CLOCK_MONOTONIC seconds when the publish was
    queued; ``pid`` the publisher's pid (0 for RESYNC); ``lagged`` the count
    dropped, for LAGGED."""
    type: EventType
    key: bytes
    old: Optional[bytes]
    new: Optional[bytes]
    revision: int
    pid: int
    time: float
    meta: bytes
    lagged: int
    observer: int


def _b(x: Bytesish) -> bytes:
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"expected bytes or str, not {type(x).__name__}")


def _ms(timeout: Optional[float]) -> int:
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be >= 0 or None")
    return max(1, int(timeout * 1000)) if timeout > 0 else 0


class Client:
    """A client of segment ``name`` (``hl_open``); one endpoint of the table.

    ``sync=True`` is ``HL_OPEN_SYNC``: ``publish``/``delete`` wait until the
    worker applied them and raise their error. ``timeout`` (seconds, None =
    the library's 5 s default) bounds every wait for the worker. Use it as a
    context manager, or call :meth:`close`. Threads may share a client
    (the library serialises calls); ``events()`` wants one consumer.
    """

    def __init__(self, name: str, *, sync: bool = False, timeout: Optional[float] = None,
                 expected_owner: Optional[str] = None) -> None:
        flags = _heirloom.OPEN_SYNC if sync else 0
        tmo = 0 if timeout is None else (-1 if timeout == float("inf") else _ms(timeout))
        self._c = _heirloom.Client(name, flags, tmo, expected_owner)
        self.name = name

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<heirloom.Client {self.name!r}{' closed' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._c.closed

    def close(self) -> None:
        """``hl_close``: flush, release the endpoint and its observers, and
        close :meth:`fileno`'s descriptor. Idempotent."""
        self._c.close()

    def observe(self, key: Bytesish, *, prefix: bool = False, puts_only: bool = False,
                deletes_only: bool = False, no_old: bool = False,
                start_rev: Optional[int] = None, progress_ms: int = 0) -> int:
        """``hl_observe``: observe ``key``; returns the observer id (never
        reused). ``prefix=True`` (``HL_OBSERVE_PREFIX``): every key that
        starts with ``key``, also keys created later; each event's ``key``
        names it. ``puts_only`` / ``deletes_only`` filter the event types in
        the worker (``HL_OBSERVE_NODELETE`` / ``NOPUT``; not both);
        ``no_old`` leaves the old value out (``Event.old`` is None).
        ``start_rev=R`` (``hl_observe_from`` with ``HL_OBSERVE_FROM_REV``):
        resume: first every change after revision R from the segment's
        history (in order per key; no old value), then the live ones, with
        no gap or duplicate between; raises :class:`CompactedError` (with
        ``.oldest_revision``) when the history no longer reaches R.
        ``progress_ms`` (``hl_observe_opts.progress_ms``, 10 or more): while
        idle, an :attr:`EventType.PROGRESS` event about that often, whose
        ``revision`` R says every change up to R came before it (where a
        restarting process resumes from)."""
        flags = ((NODELETE if puts_only else 0) | (NOPUT if deletes_only else 0) |
                 (NOOLD if no_old else 0) | (_heirloom.OBSERVE_PREFIX if prefix else 0))
        if start_rev is None:
            return self._c.observe(_b(key), flags, progress_ms)
        code, n = self._c.observe_from(_b(key), flags, start_rev, progress_ms)
        if code:
            raise CompactedError(code, n)
        return n

    def unobserve(self, observer: int) -> None:
        """``hl_unobserve``: no event for ``observer`` from now on."""
        self._c.unobserve(observer)

    def publish(self, key: Bytesish, value: Bytesish, meta: Bytesish = b"") -> None:
        """``hl_publish``: set ``key`` to ``value`` with metadata ``meta``
        (up to 256 bytes, passed to observers)."""
        self._c.publish(_b(key), _b(value), _b(meta))

    def delete(self, key: Bytesish) -> None:
        """``hl_delete``: remove ``key``."""
        self._c.delete(_b(key))

    def publish_if(self, key: Bytesish, value: Bytesish, if_rev: int,
                   meta: Bytesish = b"") -> int:
        """``hl_publish_if``: set ``key`` only if its revision is
        ``if_rev`` (0: only if it has no value). Returns the new revision;
        raises :class:`ConflictError` (with ``.revision``, the current
        one) and changes nothing otherwise. Always a round trip."""
        code, rev = self._c.publish_if(_b(key), _b(value), _b(meta), if_rev)
        if code:
            raise ConflictError(code, rev)
        return rev

    def delete_if(self, key: Bytesish, if_rev: int) -> int:
        """``hl_delete_if``: delete ``key`` only if its revision is
        ``if_rev``; as :meth:`publish_if`."""
        code, rev = self._c.delete_if(_b(key), if_rev)
        if code:
            raise ConflictError(code, rev)
        return rev

    def flush(self, timeout: Optional[float] = None) -> None:
        """``hl_flush``: wait until every queued request is applied; raise
        the first asynchronous error."""
        self._c.flush(_ms(timeout))

    def get(self, key: Bytesish) -> Optional[Tuple[bytes, int]]:
        """``hl_get``: ``(value, revision)``, or None when there is no such
        key. Reads shared memory directly; needs no worker."""
        return self._c.get(_b(key))

    def keys(self) -> List[bytes]:
        """``hl_keys``: every key that exists now."""
        return [k for k, _ in self._c.keys()]

    def stats(self) -> Dict[str, int]:
        """``hl_stats``: the table's counters (``struct hl_stats``)."""
        return self._c.stats()

    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """``hl_next``: the next event of any of this client's observers,
        waiting up to ``timeout`` seconds (None = forever, 0 = not at all);
        None when nothing came. The GIL is released while it waits."""
        t = self._c.next(_ms(timeout))
        return None if t is None else _event(t)

    def fileno(self) -> int:
        """``hl_fd``: a descriptor that turns readable when :meth:`next`
        may have an event (level-triggered; drain with ``next(0)`` until
        None, which re-arms it). Owned by the client: never close it."""
        return self._c.fd()

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, on the running asyncio loop (through
        ``hl_fd``, ``loop.add_reader``: no thread). Survives worker
        restarts. Bound it with ``asyncio.timeout()``/``wait_for``."""
        fd = self.fileno()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                t = self._c.next(0)
                if t is not None:
                    yield _event(t)
                    continue
                # next(0) found nothing and re-armed the descriptor.
                ready.clear()
                await ready.wait()
        finally:
            if not self.closed:
                loop.remove_reader(fd)


def _event(t: tuple) -> Event:
    typ, obs, key, old, new, rev, pid, ts, meta, lagged = t
    return Event(EventType(typ), key, old, new, rev, pid, ts / 1e9, meta, lagged, obs)
