"""The media relay's packet loop: one epoll set over every RTP and RTCP socket, and a timer heap.

It runs in one of two ways. In the media engine process (`sip_core.media.engine`) `run()` makes
it the process's only loop: sockets, the control channel and timers (`EngineClock`: generated
DTMF now, paced audio later) all on one thread, so nothing else in the process competes with it.
In process (`start()`, the former relay thread, kept as the benchmarks' reference) it is a thread
beside the asyncio loop, and its timers are the owner's clock's.

Why not the asyncio loop: at 50 packets/s per socket, a socket almost never has more than one
datagram waiting, so asyncio pays a full loop iteration (selector, handle, context) per packet,
and with one protocol per socket that is most of a core at 500 calls. Here a level-triggered epoll
returns every ready socket at once and each ready socket gets exactly one read, into one
preallocated buffer that handlers may patch in place and send from. One read, never a drain until
EAGAIN: a read that finds nothing raises an OSError, which costs more than the packet it looks for
(about 3.5 µs here, against 0.3 µs for a socket that epoll_wait reports once more), and level
triggering reports a socket again while anything is waiting on it.

Timers (`call_at`, the engine's pacing of generated audio and DTMF) wake the loop through a
timerfd in the same epoll set, armed to the nanosecond for the earliest timer: epoll's own timeout
counts whole milliseconds (rounded up), which would make every 20 ms frame up to a millisecond
late, by a different amount each time, and a receiver would see that as jitter. Where there is no
timerfd (not Linux, or a Python without `os.timerfd_create`) the timeout does the job as before.
Timers due within a millisecond (`TIMER_COALESCE_SECONDS`) of the one that woke the loop fire
with it: streams that started close together then share one wake-up per frame instead of one
each (on a busy host every wake-up can be delayed), and as each of them is early by the same
amount every period, its rhythm is unchanged.

Compiled forwarding (`sip_core.media.fastpath`, where it was built and asked for with `fast=True`,
as the engine process does): the wait and the plain case of forwarding move into C. A leg that
may forward unchanged registers its socket with `fast_forward`; `dispatch` then forwards what
arrives there without calling Python, and hands back only what Python must still see: the other
ready descriptors, and telephone-event packets read from registered sockets (to the handler given
with `fast_forward`). Counts and the last header sent accumulate there until `fast_take`.

Threading contract: handlers run on the engine thread while it holds `lock`. Everything that
changes what the handlers read (a leg's far end, its codecs, a switch, a close, a generated DTMF
packet) takes the same lock on the caller's thread, so a change is complete before the next packet
is handled and never half-seen. The lock is released while the thread waits in epoll, so taking it
costs at most one batch of packets. Results meant for the owner (DTMF digits) go through `post`:
`call_soon_threadsafe` on the loop that started the thread, or a plain call when `run()` owns the
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from .fastpath import FastPathState, load_fast_path

if TYPE_CHECKING:
    from ._fastpath import FastPath, Taken

__all__ = ["BUFFER_SIZE", "TIMER_COALESCE_SECONDS", "EngineClock", "EngineTimer", "RelayEngine"]

_LOGGER = logging.getLogger(__name__)

BUFFER_SIZE: Final = 2048  # larger than any RTP packet on an Ethernet path
_POLL_SECONDS: Final = 1.0  # only bounds how long a missed wake-up could delay stopping
# Timers due this soon after the one that woke the loop fire with it (see the module doc).
TIMER_COALESCE_SECONDS: Final = 0.001


class _Poller(Protocol):
    def register(self, fd: int, eventmask: int = ..., /) -> None: ...
    def unregister(self, fd: int, /) -> None: ...


type Handler = Callable[[], object]
"""Reads (at most) one datagram without blocking; what it returns is ignored."""

type PacketHandler = Callable[[bytes], object]
"""Handles one datagram the compiled path read and left to Python; what it returns is ignored."""


class EngineTimer:
    """A callback due at a monotonic time on the engine's own loop; `cancel` is idempotent."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback: Callable[[], None] | None = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None


class EngineClock:
    """A `Clock` whose timers fire on the engine's loop (`RelayEngine.run`), from its own time.

    Why not the parent's clock: the engine process has no asyncio loop, and what it paces must
    keep its rhythm whatever the SIP side is doing. Only the engine's thread may schedule.
    """

    __slots__ = ("_engine",)

    def __init__(self, engine: RelayEngine) -> None:
        self._engine = engine

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> EngineTimer:
        return self._engine.call_at(time.monotonic() + max(delay, 0.0), callback)


class RelayEngine:
    """Runs socket handlers on a dedicated thread; `register`/`unregister` from any thread."""

    def __init__(
        self,
        now: Callable[[], float],
        name: str = "callflip-relay",
        *,
        fast: bool = False,
    ) -> None:
        self.lock = threading.RLock()  # re-entrant: a switch closes the old leg inside it
        # The injected clock's time, read once per batch of ready sockets (not per packet).
        self._clock_now = now
        self.now = now()
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        # `slices[n]` is `view[:n]`, made once: sending a packet of n bytes from the buffer then
        # costs a list index instead of a new memoryview per packet.
        self.slices: list[memoryview] = [self.view[:size] for size in range(BUFFER_SIZE + 1)]
        self._name = name
        self._handlers: dict[int, Handler] = {}
        self._epoll: select.epoll | None = None
        self._poll: select.poll | None = None
        self._timerfd = -1  # wakes the loop for the earliest timer (see the module doc)
        self._armed_ns: int | None = None  # when the timerfd is set to go off (None: disarmed)
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._timers: list[tuple[float, int, EngineTimer]] = []
        self._timer_order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._here = False  # run() owns the calling thread: post() calls directly
        self.clock = EngineClock(self)
        # The compiled path (see the module doc), on epoll only: it waits with epoll_wait.
        self.fast: FastPath | None = None
        self.fast_state = FastPathState.SWITCHED_OFF
        if fast and hasattr(select, "epoll"):
            self.fast, self.fast_state = load_fast_path()
        self._packet_handlers: dict[int, PacketHandler] = {}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _poller(self) -> _Poller:
        if self._epoll is not None:
            return self._epoll
        assert self._poll is not None
        return self._poll

    def _open_poller(self) -> None:
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
        else:  # not Linux: the same level-triggered loop over poll(2)
            self._poll = select.poll()
        self._poller().register(self._wake_r.fileno(), select.POLLIN)
        if self._epoll is not None and hasattr(os, "timerfd_create"):
            try:
                timerfd = os.timerfd_create(
                    time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC
                )
            except OSError:  # without one, epoll's timeout paces the timers
                return
            try:
                self._epoll.register(timerfd, select.POLLIN)
            except OSError:
                os.close(timerfd)
                return
            self._timerfd = timerfd

    def _close_poller(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        if self._timerfd >= 0:
            os.close(self._timerfd)
            self._timerfd = -1

    def start(self) -> None:
        """Start the thread (idempotent); digits are posted to the running asyncio loop."""
        if self._thread is not None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._open_poller()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def prepare(self) -> None:
        """Make the poller so that sockets can be registered before `run` (engine process)."""
        if self._thread is None:
            self._here = True
            self._thread = threading.current_thread()
            self._open_poller()

    def run(self) -> None:
        """Run the loop on the calling thread until `stop` (the engine process's main loop)."""
        self.prepare()
        try:
            self._run()
        finally:
            self._stopping = True
            self._close_poller()
            self._wake_r.close()
            self._wake_w.close()

    def post(self, callback: Callable[..., object], *args: object) -> None:
        """Hand a result to the owner: on its asyncio loop (thread mode), or call it now."""
        if self._here:
            callback(*args)
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(callback, *args)

    def call_at(self, when: float, callback: Callable[[], None]) -> EngineTimer:
        """Run `callback` on the loop (lock held) at monotonic time `when`; engine thread only."""
        timer = EngineTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._timer_order), timer))
        return timer

    def _run_timers(self) -> float | None:
        """Fire every due timer; when the next one is due (None: there is none)."""
        timers = self._timers
        while timers:
            when, _, timer = timers[0]
            if timer.cancelled:
                heapq.heappop(timers)
                continue
            if when > time.monotonic() + TIMER_COALESCE_SECONDS:
                return when
            heapq.heappop(timers)
            callback = timer.callback
            timer.callback = None
            if callback is not None:
                try:
                    callback()
                except Exception:  # a bug in one timer must not stop every call's media
                    _LOGGER.exception("relay timer failed")
        return None

    def _arm(self, when: float | None) -> None:
        """Set the timerfd to go off at monotonic time `when` (None: disarm), unless set so."""
        when_ns = None if when is None else math.ceil(when * 1_000_000_000)
        if when_ns == self._armed_ns:
            return
        # A zero initial expiration disarms it; a time already past makes it go off at once.
        os.timerfd_settime_ns(
            self._timerfd, flags=os.TFD_TIMER_ABSTIME, initial=when_ns or 0, interval=0
        )
        self._armed_ns = when_ns

    def _timer_went_off(self) -> None:
        with contextlib.suppress(OSError):  # read it, or level-triggered epoll reports it again
            os.read(self._timerfd, 8)
        self._armed_ns = None  # one-shot: the next turn arms it afresh, even for the same time

    def stop(self) -> None:
        """Stop the thread and wait for it; registered sockets are left to their owners."""
        thread = self._thread
        if thread is None or self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if thread is threading.current_thread():
            return  # run() returns at its next turn and closes what it owns
        thread.join(timeout=5)
        self._close_poller()
        self._wake_r.close()
        self._wake_w.close()

    def register(self, sock: socket.socket, handler: Handler) -> None:
        """Call `handler` (on the engine thread, lock held) whenever `sock` is readable.

        The caller holds `lock` (or the engine has not started): the handler map is the thread's.
        """
        fd = sock.fileno()
        self._handlers[fd] = handler
        self._poller().register(fd, select.POLLIN)

    def set_handler(self, sock: socket.socket, handler: Handler) -> None:
        """Let another handler read a registered socket from its next readiness on (lock held)."""
        self._handlers[sock.fileno()] = handler

    def fast_forward(
        self,
        sock: socket.socket,
        peer: socket.socket,
        dtmf_payload_type: int | None,
        on_packet: PacketHandler,
    ) -> None:
        """Forward what arrives on the connected `sock` out of the connected `peer` in compiled
        code, unchanged; telephone-event packets go to `on_packet` (lock held, `fast` set)."""
        assert self.fast is not None
        fd = sock.fileno()
        self.fast.set(fd, peer.fileno(), -1 if dtmf_payload_type is None else dtmf_payload_type)
        self._packet_handlers[fd] = on_packet

    def fast_take(self, sock: socket.socket) -> Taken | None:
        """What the compiled path counted for `sock` since the last take (None: not there)."""
        if self.fast is None:
            return None
        return self.fast.take(sock.fileno())

    def fast_remove(self, sock: socket.socket) -> Taken | None:
        """Take `sock` back from the compiled path, with what it counted (None: not there)."""
        if self.fast is None:
            return None
        fd = sock.fileno()
        self._packet_handlers.pop(fd, None)
        return self.fast.remove(fd)

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching `sock` (caller holds `lock`); close the socket only after this.

        A socket still in the compiled path leaves it here, and what it counted is lost: the
        relay takes it back with `fast_remove` first."""
        fd = sock.fileno()
        if fd >= 0 and self.fast is not None:
            self._packet_handlers.pop(fd, None)
            self.fast.remove(fd)
        if fd < 0 or self._handlers.pop(fd, None) is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._poller().unregister(fd)

    @property
    def stopping(self) -> bool:
        """`stop` was called: the loop ends at its next turn."""
        return self._stopping

    def _is_stopping(self) -> bool:
        """Read fresh each time: `stop` sets it from another thread."""
        return self._stopping

    def _run(self) -> None:
        lock = self.lock
        handlers = self._handlers
        packet_handlers = self._packet_handlers
        clock_now = self._clock_now
        wake = self._wake_r.fileno()
        timerfd = self._timerfd
        fast = self.fast
        # In the engine process (run() owns the thread, the relay's clock is time.monotonic, as
        # C's CLOCK_MONOTONIC is) the compiled path keeps waiting and forwarding by itself until
        # something else is ready: no turn of this loop per round of plain packets.
        rounds_in_c = fast is not None and self._here and clock_now is time.monotonic
        if self._epoll is not None:
            wait: Callable[[float], list[tuple[int, int]]] = self._epoll.poll
            epfd = self._epoll.fileno()
            timeout = _POLL_SECONDS
        else:
            assert self._poll is not None
            wait = self._poll.poll
            epfd = -1
            timeout = _POLL_SECONDS * 1000  # poll(2) counts milliseconds
        scale = timeout / _POLL_SECONDS

        while not self._is_stopping():
            pause = timeout
            if self._timers:
                with lock:
                    due = self._run_timers()
                if timerfd >= 0:
                    self._arm(due)
                elif due is not None:
                    pause = min(timeout, max(due - time.monotonic(), 0.0) * scale)
            elif timerfd >= 0 and self._armed_ns is not None:
                self._arm(None)  # the last timer was cancelled: no need to wake for it
            packets: list[tuple[int, bytes]] = []
            try:
                if fast is None:
                    ready = wait(pause)
                elif rounds_in_c:
                    with lock:  # uncontended: nothing else in the engine process takes it
                        ready, packets = fast.run(epfd, pause)
                else:
                    fast.poll(epfd, pause)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                if self._is_stopping():  # the poller was closed under us: we are done
                    return
                raise
            with lock:
                self.now = clock_now()
                if fast is not None and not rounds_in_c:
                    # Plain RTP is forwarded in there; the rest comes back for the handlers.
                    ready, packets = fast.dispatch(self.now)
                for fd, data in packets:
                    packet_handler = packet_handlers.get(fd)
                    if packet_handler is None:
                        continue
                    try:
                        packet_handler(data)
                    except Exception:  # as below: one bad packet must not stop every call
                        _LOGGER.exception("relay handler failed")
                for fd, _ in ready:
                    handler = handlers.get(fd)
                    if handler is None:
                        if fd == timerfd:
                            self._timer_went_off()
                        elif fd == wake:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(64)
                        continue
                    try:
                        handler()
                    except Exception:  # one bad packet or a bug must not stop every call's media
                        _LOGGER.exception("relay handler failed")
                    if self._stopping:
                        break
