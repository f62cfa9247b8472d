"""The PBX facade: one object that owns the whole stack, for the runner and for Home Assistant.

Everything above the transaction layer that is not a feature of its own lives here: dispatching
requests by method, OPTIONS, the checks every request gets (Require), scheduling binding expiry, and
applying configuration changes live. Home Assistant and ``python -m sip_core`` use only this class,
so the two can never drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sip_core import __version__
from sip_core.b2bua import ALLOWED_METHODS, B2bua
from sip_core.calls import Call, CallHistory, CallRecord, HandoffRecord
from sip_core.clock import Clock, LoopClock, TimerHandle
from sip_core.config import PbxConfig, RingGroup, User
from sip_core.digest import DeviceCredentials, DigestAuthenticator
from sip_core.events import EventBus, PbxEvent, RegistrationChanged, RegistrationReason
from sip_core.features.handoff import PullOperation, PushOperation
from sip_core.media import MediaRelay
from sip_core.message import Request, Response, make_response
from sip_core.prg.presence import GroupPresence
from sip_core.registrar import Binding, BindingRecord, Registrar, RegistrarSettings
from sip_core.transaction import ServerTransaction, TransactionLayer
from sip_core.transport import Address, Source, TransportLayer

__all__ = ["ALLOWED_METHODS", "Pbx"]

_LOGGER = logging.getLogger(__name__)

#: Methods the B2BUA handles (OPTIONS only inside a dialog).
CALL_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO", "UPDATE"})
#: Methods RFC 3261 and its extensions define that we recognise but do not offer (405, not 501).
KNOWN_METHODS = frozenset(
    {
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    }
)
SERVER_HEADER = f"callflip/{__version__}"
#: The bodies we read, by method; any other gets 415 Unsupported Media Type with these in Accept.
BODY_TYPES: dict[str, tuple[str, ...]] = {
    "INVITE": ("application/sdp",),
    "UPDATE": ("application/sdp",),
}
#: Option tags we support (a Require naming anything else gets 420 Bad Extension).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({"timer"})


class Pbx:
    """The PBX: transport, transactions, registrar and (later) calls, behind one small API.

    ``bindings`` restores registrations saved by a previous run (Home Assistant persists them with
    its Store) so that phones need not register again after a restart.
    """

    def __init__(
        self,
        config: PbxConfig,
        *,
        clock: Clock | None = None,
        bindings: Sequence[Mapping[str, Any]] | None = None,
        digest_secret: bytes | None = None,
    ) -> None:
        self._config = config
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._events = EventBus()
        self._credentials: dict[str, DeviceCredentials] = {}
        self._index_credentials(config)
        self._authenticator = DigestAuthenticator(
            config.sip.domain,
            self._clock,
            self._credentials.get,
            float(config.auth.nonce_lifetime),
            secret=digest_secret,
        )
        self._registrar = Registrar(
            registrar_settings(config),
            self._authenticator,
            self._clock,
            publish=self._events.publish,
        )
        if bindings:
            restored = self._registrar.store.restore(bindings, self._clock.wall())
            _LOGGER.info("Restored %d saved registration(s)", restored)
        self._transport = TransportLayer(
            config.sip.listen,
            config.sip.port,
            self._receive,
            clock=self._clock,
            reuse_port=config.sip.workers > 0,
        )
        self._transactions = TransactionLayer(
            self._transport,
            self._clock,
            on_request=self._on_request,
            on_stray_response=self._on_stray_response,
        )
        self._relay = MediaRelay(
            config.sip.listen,
            config.rtp.port_min,
            config.rtp.port_max,
            clock=self._clock,
        )
        self._b2bua = B2bua(
            self._transactions,
            self._clock,
            config=lambda: self._config,
            authenticator=self._authenticator,
            bindings=self._registrar.store.get,
            relay=self._relay,
            publish=self._events.publish,
            listening=self._events.__bool__,
            respond=lambda txn, response: txn.respond(self._stamp(response)),
            local_port=lambda: self._transport.local_address.port,
            history=CallHistory(),
        )
        self._expiry_timer: TimerHandle | None = None
        self._expiry_due: float | None = None
        self._running = False

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP port (UDP and TCP); raises `TransportError` with a readable message."""
        await self._transport.start()
        try:
            self._relay.start()  # the media engine process, ready before the first call
        except BaseException:
            await self._transport.stop()
            raise
        self._running = True
        self._expire_bindings()

    async def stop(self) -> None:
        """Release the port and every timer; bindings stay in memory for `binding_records`."""
        self._running = False
        self._b2bua.close()
        await self._relay.stop()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
            self._expiry_due = None
        self._transactions.close()
        await self._transport.stop()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def local_address(self) -> Address:
        return self._transport.local_address

    @property
    def config(self) -> PbxConfig:
        return self._config

    # -- API for the runner and Home Assistant ------------------------------------------------

    def subscribe(self, callback: Callable[[PbxEvent], None]) -> Callable[[], None]:
        """Receive every event on the event loop; the returned function unsubscribes."""
        return self._events.subscribe(callback)

    def bindings(self, username: str | None = None) -> list[Binding]:
        """Current registrations, of one device or of all."""
        if username is None:
            return self._registrar.store.all()
        return list(self._registrar.store.get(username))

    def calls(self) -> list[Call]:
        """Calls in progress, oldest first (`Call.state`, `Call.devices`, `Call.id`...)."""
        return self._b2bua.calls()

    def call(self, call_id: str) -> Call | None:
        """The call in progress with this id (None when there is none or it has ended)."""
        return self._b2bua.get(call_id)

    def flip(
        self,
        call_id: str,
        target: str | None = None,
        timeout: float | None = None,
        *,
        device: str | None = None,
    ) -> asyncio.Future[HandoffRecord]:
        """Move a call to another device of the same user (the other party stays connected).

        Raises a `sip_core.features.FlipError` subclass when the flip cannot start (NoSuchCall,
        TargetNotRegistered, TargetIsCurrentDevice, NoFlipTarget, AmbiguousFlipTarget...). The
        returned future resolves to the `HandoffRecord` (``succeeded`` true or false); the
        handoff events say the same. ``timeout`` defaults to ``flip.timeout`` of the config.
        Must be called on the event loop.
        """
        return self._b2bua.flip(call_id, target, timeout, device=device)

    def hangup(self, call_id: str) -> bool:
        """End a call (both sides); false when there is no such call in progress."""
        return self._b2bua.hangup(call_id)

    # -- Personal Ring Groups (sip_core.prg, sip_core.features.handoff) ---------------------------

    @property
    def group_presence(self) -> GroupPresence:
        """Each member's Group Presence (`GroupPresence.subscribe` tells of changes)."""
        return self._b2bua.group_presence

    def group_present(self, group: str, device: str) -> bool:
        return self._b2bua.group_presence.present(group, device)

    def set_group_presence(self, group: str, device: str, present: bool) -> None:
        """Make a member present or absent; `GroupPresenceError` when it is no member."""
        self._b2bua.group_presence.set_present(group, device, present)

    def update_groups(self, groups: Sequence[RingGroup]) -> None:
        """Apply a new set of Personal Ring Groups at once (calls in progress go on)."""
        self._config = replace(self._config, groups=tuple(groups))

    def push(
        self, call_id: str, device: str | None = None, group: str | None = None
    ) -> PushOperation:
        """Push a call to its device's group (`Handoff.push`); `HandoffError` when refused."""
        return self._b2bua.push(call_id, device, group)

    def pull(self, device: str) -> PullOperation:
        """Pull the group's call in progress to ``device`` (it rings); `HandoffError` else."""
        return self._b2bua.pull(device)

    def group_ringing(self, group: str) -> bool:
        """Whether a call rings the group now (a call to its pilot, or a push)."""
        found = self._config.group(group)
        return found is not None and self._b2bua.handoff.rings(found)

    def group_call_holder(self, group: str) -> str | None:
        """The member holding an answered call now (the first in the group's order), if any."""
        found = self._config.group(group)
        return self._b2bua.handoff.call_holder(found) if found is not None else None

    def history(self) -> list[CallRecord]:
        """Finished calls, oldest first (bounded), each with its handoff records."""
        return self._b2bua.history.records()

    def binding_records(self) -> list[BindingRecord]:
        """JSON-able registrations for persistence; feed them back as ``Pbx(bindings=...)``."""
        return self._registrar.store.records()

    def update_users(self, users: Sequence[User]) -> None:
        """Apply a new set of users and devices at once, without dropping anything in progress.

        Devices that disappear lose their registrations (an event says so); passwords and
        challenge orders take effect with the next request.
        """
        config = replace(self._config, users=tuple(users))
        removed = set(self._credentials) - {device.username for _, device in config.devices()}
        self._config = config
        self._index_credentials(config)
        for username in sorted(removed):
            gone = self._registrar.store.remove(username)
            if gone:
                _LOGGER.info("Device %s was removed: dropping its registration(s)", username)
                self._events.publish(
                    RegistrationChanged(username, (), RegistrationReason.UNREGISTERED, gone)
                )

    def receive_forwarded(self, data: bytes, remote: Address, identity: str | None) -> None:
        """A UDP datagram a registration worker received on our port (`sip_core.workers`);
        ``identity`` is the device it authenticated a REGISTER as."""
        self._transport.receive_forwarded(data, remote, identity)

    def steer_registers(self, workers: int) -> None:
        """Have the kernel send REGISTER to the ``workers`` worker sockets on our port."""
        self._transport.steer_registers(workers)

    # -- internals ----------------------------------------------------------------------------

    def _index_credentials(self, config: PbxConfig) -> None:
        # Rebuilt in place: the authenticator holds a reference to this dict's ``get``.
        fresh = device_credentials(config)
        self._credentials.clear()
        self._credentials.update(fresh)

    def _receive(self, message: Request | Response, source: Source) -> None:
        self._transactions.receive(message, source)

    def _on_stray_response(self, response: Response, source: Source) -> None:
        self._b2bua.stray_response(response, source)

    def _on_request(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        if txn is None:
            # An ACK for a 2xx: it belongs to a call.
            self._b2bua.handle_request(request, None, source)
            return
        method = request.method
        if method == "REGISTER":
            txn.respond(self._stamp(self._registrar.handle_register(request, source)))
            self._schedule_expiry()
            return
        if method == "CANCEL":
            # The transaction layer answered the CANCEL; the B2BUA ends the call it cancels.
            self._b2bua.handle_request(request, txn, source)
            return
        unsupported = self._unsupported_extensions(request)
        if unsupported:
            _LOGGER.info(
                "Rejected %s from %s: unsupported extension(s) %s",
                method,
                source.remote,
                ", ".join(unsupported),
            )
            response = make_response(request, 420)
            response.headers.set("Unsupported", ", ".join(unsupported))
            txn.respond(self._stamp(response))
            return
        refusal = self._refusal(request)
        if refusal is not None:
            status, why, extra = refusal
            _LOGGER.info("Rejected %s from %s: %s", method, source.remote, why)
            response = make_response(request, status)
            for name, value in extra:
                response.headers.set(name, value)
            txn.respond(self._stamp(response))
            return
        if method in CALL_METHODS or (method == "OPTIONS" and request.to.tag):
            self._b2bua.handle_request(request, txn, source)
            return
        if method == "OPTIONS":
            txn.respond(self._stamp(self._options_response(request)))
            return
        if method in KNOWN_METHODS:
            status, why = 405, "not offered by this PBX yet"
        else:
            status, why = 501, "unknown method"
        _LOGGER.info("Rejected %s from %s: %s", method, source.remote, why)
        txn.respond(self._stamp(make_response(request, status)))

    @staticmethod
    def _refusal(request: Request) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
        """RFC 3261 §8.2 and §16.3 checks that come before authentication and routing.

        They reveal nothing about users, so they are answered first, in the RFC's order: a request
        that may not travel further (483), a body we cannot read (415), and an INVITE whose sender
        could not read our SDP answer (406). RFC 4475 §3.3 exercises each of them.
        """
        method = request.method
        if method != "REGISTER" and request.uri.user and request.max_forwards == 0:
            return 483, "Max-Forwards is 0", ()
        if method in BODY_TYPES and request.body:
            kind = request.content_type
            if kind not in BODY_TYPES[method]:
                accepted = ", ".join(BODY_TYPES[method])
                return 415, f"cannot read a {kind or 'untyped'} body", (("Accept", accepted),)
        if method == "INVITE" and "Accept" in request.headers:
            offered = {
                value.split(";", 1)[0].strip().lower()
                for value in request.headers.get_all("Accept")
            }
            if offered.isdisjoint({"application/sdp", "application/*", "*/*"}):
                return 406, "the caller accepts no SDP answer", ()
        return None

    @staticmethod
    def _unsupported_extensions(request: Request) -> list[str]:
        tags: list[str] = []
        for value in request.headers.get_all("Require"):
            tag = value.strip()
            if tag and tag.lower() not in SUPPORTED_EXTENSIONS:
                tags.append(tag)
        return tags

    @staticmethod
    def _options_response(request: Request) -> Response:
        response = make_response(request, 200)
        response.headers.set("Accept", "application/sdp")
        response.headers.set("Accept-Encoding", "identity")
        response.headers.set("Accept-Language", "en")
        response.headers.set("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS)))
        return response

    @staticmethod
    def _stamp(response: Response) -> Response:
        """Every response says who we are and what we allow (RFC 3261 §20.5, §20.35)."""
        headers = response.headers
        if "Allow" not in headers:
            headers.set("Allow", _ALLOW_VALUE)
        if "Server" not in headers:
            headers.set("Server", SERVER_HEADER)
        return response

    def _schedule_expiry(self) -> None:
        """Keep one timer, set for the earliest expiry; only ever moved earlier here."""
        due = self._registrar.next_expiry()
        if due is None or not self._running:
            return
        if self._expiry_due is not None and self._expiry_due <= due:
            return
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_due = due
        delay = max(0.0, due - self._clock.monotonic())
        self._expiry_timer = self._clock.call_later(delay, self._expire_bindings)

    def _expire_bindings(self) -> None:
        self._expiry_timer = None
        self._expiry_due = None
        self._registrar.expire()
        self._schedule_expiry()


_ALLOW_VALUE = ", ".join(ALLOWED_METHODS)


def registrar_settings(config: PbxConfig) -> RegistrarSettings:
    """The registrar's settings for a configuration (also used by the registration workers)."""
    return RegistrarSettings(
        domain=config.sip.domain,
        min_expires=config.registrar.min_expires,
        max_expires=config.registrar.max_expires,
        default_expires=config.registrar.default_expires,
        max_contacts=config.registrar.max_contacts,
        supported_extensions=SUPPORTED_EXTENSIONS,
        local_hosts=frozenset({config.sip.listen}),
    )


def device_credentials(config: PbxConfig) -> dict[str, DeviceCredentials]:
    """Digest credentials of every device, by username."""
    return {
        device.username: DeviceCredentials(device.username, device.password, device.digest)
        for _, device in config.devices()
    }
