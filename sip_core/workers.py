"""Registration workers: processes that take REGISTER over UDP off the runner's main process.

Why: the main process is one asyncio loop on one core, and a registration costs it two parses,
a digest check and two responses. Phones re-register all the time, so on a big site that work,
not calls, fills the core. With ``sip.workers: N`` the standalone runner starts N worker
processes that bind the same UDP port (SO_REUSEPORT). A classic BPF program on the port's socket
group (`TransportLayer.steer_registers`) sends REGISTER datagrams to the workers and everything
else to the main process.

A worker answers what needs no state beyond the digest nonces: challenges and refusals (401, 403,
404, 420, 400) go out of its own socket, which has the same address as the main one. A REGISTER
that authenticates is handed to the main process over a private socket pair together with the
device it authenticated as; the main process alone owns the bindings (so the 200 lists every
contact of the device, whichever worker saw it) and answers with its own transaction. Datagrams a
worker is not meant to see (steering can be off, or a worker died and the kernel hashed) are
handed over unchanged. Both sides share the digest secret, so a nonce issued by one is good in
any of them; each keeps its own nonce counts, and since the kernel keeps a client on one worker
for the life of its flow, replay detection still holds.

The hand-over is one SOCK_SEQPACKET message: a header (kind, remote port, lengths), the remote
host, the identity and the datagram. Only processes the runner started hold the socket; nothing
in a SIP message can set an identity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import struct
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sip_core.clock import Clock, LoopClock
from sip_core.config import ConfigError, PbxConfig, load_config
from sip_core.digest import DigestAuthenticator
from sip_core.events import PbxEvent
from sip_core.guard import Guard
from sip_core.message import Request, Response
from sip_core.pbx import Pbx, device_credentials, registrar_settings
from sip_core.registrar import Registrar
from sip_core.transaction import ServerKey, ServerTransaction, TransactionLayer, server_key
from sip_core.transport import Address, Source, TransportError, TransportLayer

_LOGGER = logging.getLogger(__name__)

_HEADER: Final = struct.Struct("!cHHH")  # kind, remote port, host length, identity length
_RAW: Final = b"R"  # a datagram handed over as it arrived
_AUTHENTICATED: Final = b"A"  # a REGISTER the worker authenticated; identity follows
_SECRET: Final = b"S"  # main -> worker at start-up: the digest secret
_READY: Final = b"U"  # worker -> main: bound to the port, serving
_MAX_PACKET: Final = 70_000  # a UDP datagram (MAX_UDP_MESSAGE) plus the header
_CHANNEL_BUFFER: Final = 4 * 1024 * 1024
_DRAIN: Final = 64
_FORWARDED_LIFETIME: Final = 32.0  # Timer J: how long a client may retransmit a REGISTER
_START_TIMEOUT: Final = 10.0
_RESTART_DELAY: Final = 1.0


@dataclass(frozen=True, slots=True)
class Handover:
    """One datagram passed from a worker to the main process."""

    data: bytes
    remote: Address
    identity: str | None

    def encode(self) -> bytes:
        host = self.remote.host.encode()
        identity = (self.identity or "").encode()
        kind = _RAW if self.identity is None else _AUTHENTICATED
        header = _HEADER.pack(kind, self.remote.port, len(host), len(identity))
        return b"".join((header, host, identity, self.data))

    @classmethod
    def decode(cls, packet: bytes) -> Handover:
        """Raises ValueError for a packet this module did not write."""
        if len(packet) < _HEADER.size:
            raise ValueError("short hand-over packet")
        kind, port, host_length, identity_length = _HEADER.unpack_from(packet)
        if kind not in (_RAW, _AUTHENTICATED):
            raise ValueError(f"unknown hand-over kind {kind!r}")
        start = _HEADER.size
        host = packet[start : start + host_length].decode()
        start += host_length
        identity = packet[start : start + identity_length].decode()
        start += identity_length
        if kind == _AUTHENTICATED and not identity:
            raise ValueError("authenticated hand-over without an identity")
        trusted = identity if kind == _AUTHENTICATED else None
        return cls(packet[start:], Address(host, port), trusted)


def _ignore_event(_event: PbxEvent) -> None:
    """A worker's bans are logged by its guard; nobody subscribes to its events."""


# -- the worker process -----------------------------------------------------------------------


class RegistrationFront:
    """What runs in a worker: challenges REGISTER, hands over what authenticates."""

    def __init__(
        self, config: PbxConfig, secret: bytes, channel: socket.socket, clock: Clock | None = None
    ) -> None:
        self._clock: Clock = clock if clock is not None else LoopClock()
        credentials = device_credentials(config)
        self._authenticator = DigestAuthenticator(
            config.sip.domain,
            self._clock,
            credentials.get,
            float(config.auth.nonce_lifetime),
            secret=secret,
        )
        # Its own guard: a worker answers the REGISTERs it gets, so it must also count their
        # failed logins and ignore a source it banned (the main process guards everything else).
        self._guard = Guard(config.security, self._clock, _ignore_event)
        self._registrar = Registrar(
            registrar_settings(config),
            self._authenticator,
            self._clock,
            on_auth=self._guard.authenticated,
        )
        self._transport = TransportLayer(
            config.sip.listen,
            config.sip.port,
            self._on_message,
            clock=self._clock,
            reuse_port=True,
            tcp=False,
            on_datagram=self._on_datagram,
        )
        self._transactions = TransactionLayer(
            self._transport, self._clock, on_request=self._on_request
        )
        self._channel = channel
        # REGISTERs already handed over, by transaction key: their retransmissions follow them.
        self._forwarded: OrderedDict[ServerKey, float] = OrderedDict()
        self._datagram = b""  # the datagram being parsed, to hand over unchanged
        self.answered = 0  # REGISTERs this worker answered itself (challenges, refusals)
        self.authenticated = 0  # REGISTERs it authenticated and handed over
        self.passed_on = 0  # other datagrams handed over unchanged (retransmissions included)

    async def start(self) -> None:
        await self._transport.start()

    async def stop(self) -> None:
        self._guard.close()
        self._transactions.close()
        await self._transport.stop()

    def _on_datagram(self, data: bytes, source: Source) -> bool:
        if self._guard.drops_datagram(data, source):
            return True
        if not data.startswith(b"REGISTER "):
            self.passed_on += 1
            self._hand_over(data, source.remote, None)
            return True
        self._datagram = data
        return False

    def _on_message(self, message: Request | Response, source: Source) -> None:
        if (
            not isinstance(message, Request)
            or message.method != "REGISTER"
            or server_key(message) in self._forwarded
        ):
            self.passed_on += 1
            self._hand_over(self._datagram, source.remote, None)
            return
        if self._guard.admit(message, source) is not None:
            return
        self._transactions.receive(message, source)

    def _on_request(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        assert txn is not None  # only REGISTERs get this far, and each has its transaction
        outcome = self._registrar.authenticate(request, source)
        if isinstance(outcome, Response):
            self.answered += 1
            txn.respond(outcome)
            return
        txn.forget()
        self._remember(txn.key)
        self.authenticated += 1
        self._hand_over(self._datagram, source.remote, outcome)

    def _remember(self, key: ServerKey) -> None:
        now = self._clock.monotonic()
        forwarded = self._forwarded
        while forwarded:
            oldest, expires = next(iter(forwarded.items()))
            if expires > now:
                break
            del forwarded[oldest]
        forwarded[key] = now + _FORWARDED_LIFETIME

    def _hand_over(self, data: bytes, remote: Address, identity: str | None) -> None:
        try:
            self._channel.send(Handover(data, remote, identity).encode())
        except BlockingIOError:
            # The main process is behind: like a datagram lost on the way; the client resends.
            _LOGGER.debug("hand-over queue full, dropped a datagram from %s", remote)
        except OSError as exc:
            _LOGGER.debug("hand-over failed: %s", exc)


async def _run_worker(config: PbxConfig, secret: bytes, channel: socket.socket) -> None:
    front = RegistrationFront(config, secret, channel)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def parent_gone() -> None:
        # The main process writes nothing after the secret: readable means it closed its end.
        with contextlib.suppress(BlockingIOError):
            if not channel.recv(16):
                stop.set()

    await front.start()
    channel.setblocking(False)
    channel.send(_READY)
    loop.add_reader(channel.fileno(), parent_gone)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(channel.fileno())
        await front.stop()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m sip_core.workers --config pbx.yaml --channel FD``: started by `WorkerPool`."""
    parser = argparse.ArgumentParser(prog="python -m sip_core.workers")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--channel", required=True, type=int, help="inherited socket descriptor")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {args.index}]: %(message)s",
        stream=sys.stderr,
    )
    channel = socket.socket(fileno=args.channel)
    channel.settimeout(_START_TIMEOUT)
    try:
        first = channel.recv(256)
    except OSError as exc:
        print(f"callflip worker: no secret from the main process: {exc}", file=sys.stderr)
        return 2
    if not first.startswith(_SECRET) or len(first) < 17:
        print("callflip worker: bad start-up message", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"callflip worker: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run_worker(config, first[1:], channel))
    except TransportError as err:
        print(f"callflip worker: {err}", file=sys.stderr)
        return 2
    return 0


# -- the main process ---------------------------------------------------------------------------


class HandoverReceiver:
    """Reads one worker's channel in the main process and feeds the Pbx."""

    def __init__(self, pbx: Pbx, channel: socket.socket) -> None:
        self._pbx = pbx
        self.channel = channel
        self._reading = False

    def start(self) -> None:
        self.channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._drain)
        self._reading = True

    def stop(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(RuntimeError, ValueError):  # loop closed, socket closed
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
        self.channel.close()

    def _drain(self) -> None:
        channel = self.channel
        pbx = self._pbx
        for _ in range(_DRAIN):
            try:
                packet = channel.recv(_MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                _LOGGER.debug("worker channel: %s", exc)
                return
            if not packet:  # the worker closed its end (WorkerPool restarts it)
                self.stop()
                return
            try:
                handover = Handover.decode(packet)
            except (ValueError, UnicodeDecodeError) as exc:
                _LOGGER.warning("dropped a bad packet from a registration worker: %s", exc)
                continue
            pbx.receive_forwarded(handover.data, handover.remote, handover.identity)


class WorkerPool:
    """Starts, watches and stops the worker processes; feeds what they hand over to the Pbx.

    The Pbx must be started first (its socket is the group's socket 0, which steering relies on)
    and with the same ``digest_secret`` the pool was given.
    """

    def __init__(
        self, pbx: Pbx, config_path: Path, count: int, secret: bytes, log_level: str = "info"
    ) -> None:
        self._pbx = pbx
        self._config_path = config_path
        self._count = count
        self._secret = secret
        self._log_level = log_level
        self._workers: dict[int, tuple[asyncio.subprocess.Process, HandoverReceiver]] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False

    @staticmethod
    def new_secret() -> bytes:
        return secrets.token_bytes(32)

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def start(self) -> None:
        for index in range(1, self._count + 1):
            await self._spawn(index)
        self._steer()
        _LOGGER.info("%d registration worker(s) share the UDP port", self._count)

    def _steer(self) -> None:
        try:
            self._pbx.steer_registers(self._count)
        except TransportError as exc:
            # Still correct without it: the kernel spreads datagrams by flow hash, workers hand
            # on what is not a REGISTER and the main process handles REGISTERs it receives.
            _LOGGER.warning("%s; every process gets a share of all traffic instead", exc)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        for process, receiver in self._workers.values():
            receiver.stop()  # closing our end: the worker sees its parent go and stops
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process, _ in self._workers.values():
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._workers.clear()

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (ours, theirs):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, _CHANNEL_BUFFER)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sip_core.workers",
                "--config", str(self._config_path), "--channel", str(theirs.fileno()),
                "--index", str(index), "--log-level", self._log_level,
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        ours.send(_SECRET + self._secret)
        # Steering counts on the worker's socket being in the group: wait until it is.
        ours.setblocking(False)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                ready = await asyncio.get_running_loop().sock_recv(ours, 16)
        except (TimeoutError, OSError):
            ready = b""
        if ready != _READY:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise TransportError(f"registration worker {index} did not start")
        receiver = HandoverReceiver(self._pbx, ours)
        receiver.start()
        self._workers[index] = (process, receiver)
        task = asyncio.get_running_loop().create_task(self._watch(index, process, receiver))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(
        self, index: int, process: asyncio.subprocess.Process, receiver: HandoverReceiver
    ) -> None:
        status = await process.wait()
        if self._stopping:
            return
        receiver.stop()
        _LOGGER.error(
            "registration worker %d exited with status %s; restarting it (until then the kernel "
            "gives its share of REGISTER to the main process)",
            index,
            status,
        )
        await asyncio.sleep(_RESTART_DELAY)
        if self.stopping:  # stop() may have run meanwhile
            return
        try:
            await self._spawn(index)
            self._steer()
        except TransportError as exc:
            _LOGGER.error("%s; the main process takes its REGISTERs from now on", exc)


if __name__ == "__main__":
    sys.exit(worker_main())
