"""The PBX facade: one object that owns the whole stack, for the runner and for Home Assistant.

Everything above the transaction layer that is not a feature of its own lives here: dispatching
requests by method, OPTIONS, the checks every request gets (Require), scheduling binding expiry, and
applying configuration changes live. Home Assistant and ``python -m sip_core`` use only this class,
so the two can never drift apart.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sip_core import __version__
from sip_core.audio import Playback
from sip_core.b2bua import ALLOWED_METHODS, B2bua
from sip_core.call.originate import CallerId
from sip_core.call_audio import (
    CallPlayback,
    PlaySide,
    find_call,
    play_into_call,
    playable_legs,
)
from sip_core.call_snapshot import CallSnapshot, DeviceActivity, snapshot_of
from sip_core.calls import Call, CallHistory, CallRecord, HandoffRecord, Leg, TransferRecord
from sip_core.clock import Clock, CountingClock, LoopClock, TimerHandle
from sip_core.config import PbxConfig, RingGroup, SecuritySettings, TransferSettings, User
from sip_core.digest import DeviceCredentials, DigestAuthenticator
from sip_core.events import EventBus, PbxEvent, RegistrationChanged, RegistrationReason
from sip_core.features.announce import DEFAULT_RING_TIMEOUT, AnnounceResult
from sip_core.features.click_to_dial import ClickToDialResult
from sip_core.features.flip_menu import label_prompt_assets
from sip_core.features.handoff import PullOperation, PushOperation
from sip_core.guard import Ban, Guard
from sip_core.media import EngineStatus, MediaRelay
from sip_core.message import ParseError, Request, Response, make_response
from sip_core.phones import DiscoverySource, PhoneDirectory, Sighting, is_local_address
from sip_core.plugplay import PNP_GROUP, PNP_PORT, MulticastListener, PlugAndPlay, is_ua_profile
from sip_core.presence import DeviceStates, ForwardTarget, Presence
from sip_core.prg.presence import GroupPresence
from sip_core.provisioning import Adoption, Provisioner, format_for
from sip_core.registrar import Binding, BindingRecord, Registrar, RegistrarSettings
from sip_core.state import RuntimeState
from sip_core.stats import PbxStats
from sip_core.tls import server_context
from sip_core.transaction import ServerTransaction, TransactionLayer
from sip_core.transport import Address, Source, TransportKind, TransportLayer
from sip_core.trunk.config import Trunking
from sip_core.trunk.egress import TrunkEgress
from sip_core.trunk.ingress import TrunkIngress
from sip_core.trunk.registration import TrunkRegistrations, TrunkState
from sip_core.trunk.tls import TrunkTlsClients
from sip_core.useragent import normalise_mac, parse_user_agent

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
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({"timer", "replaces"})


class Pbx:
    """The PBX: transport, transactions, registrar and (later) calls, behind one small API.

    ``bindings`` restores registrations saved by a previous run (Home Assistant persists them with
    its Store, the runner in its state file) so that phones need not register again after a
    restart; ``history`` restores the call records of a previous run the same way.
    """

    def __init__(
        self,
        config: PbxConfig,
        *,
        clock: Clock | None = None,
        bindings: Sequence[Mapping[str, Any]] | None = None,
        digest_secret: bytes | None = None,
        history: Sequence[CallRecord] | None = None,
        state: RuntimeState | None = None,
    ) -> None:
        self._config = config
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._events = EventBus()
        self._ingress = TrunkIngress(lambda: self._config)
        self._guard = Guard(
            config.security, self._clock, self._events.publish, trunks=self._ingress
        )
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
            on_auth=self._guard.authenticated,
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
            on_datagram=self._guard.drops_datagram,
            **_tls_listener(config),
        )
        self._trunk_tls = TrunkTlsClients(self._transport)
        self._trunk_tls.apply(config.trunking.trunks if config.trunking is not None else ())
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
            music_file=config.rtp.music_on_hold,
            rtp_timeout=config.rtp.timeout,
            realtime=config.rtp.realtime,
        )
        group_presence = GroupPresence(lambda: self._config, state)
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
            history=_history(history),
            on_auth=self._guard.authenticated,
            presence=Presence(lambda: self._config, state, group_present=group_presence.present),
            group_presence=group_presence,
            ingress=self._ingress,
            egress=TrunkEgress(lambda: self._config),
            tls_port=self._tls_port,
        )
        self._expiry_timer: TimerHandle | None = None
        self._expiry_due: float | None = None
        self._running = False
        # Discovery of desk phones and their provisioning (sip_core.plugplay, .provisioning).
        self._phones = PhoneDirectory(self._clock)
        self._provisioner = Provisioner(self._clock, self._provisioning_account)
        self._provisioning_url: str | None = None
        self._plugplay = PlugAndPlay(
            self._clock,
            self._phones,
            self._provisioner,
            send_request=self._send_notify,
            respond=lambda txn, response: txn.respond(self._stamp(response)),
            local_port=lambda: self._transport.local_address.port,
            url_base=self._provisioning_base,
            standing=lambda: dict(self._config.discovery.provision),
        )
        self._multicast: MulticastListener | None = None
        self._joined = False
        # Registration with SIP trunks' providers (sip_core.trunk).
        self._trunks = TrunkRegistrations(
            config.trunking.trunks if config.trunking is not None else (),
            sender=self._transactions,
            clock=self._clock,
            local_host=self._trunk_local_host,
            local_port=lambda: self._transport.local_address.port,
            publish=self._events.publish,
            tls_port=self._tls_port,
            keepalive=self._transport.ping,
        )

    def _tls_port(self) -> int | None:
        """Our TLS listener's port, None without one (`sip_core.tls_settings`)."""
        address = self._transport.tls_address
        return None if address is None else address.port

    @property
    def tls_address(self) -> Address | None:
        """Where the PBX listens for TLS (after `start`); None without a ``tls`` section."""
        return self._transport.tls_address

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
        await self._start_plug_and_play()
        await self._resolve_trunk_hosts()
        self._trunks.start()

    async def stop(self) -> None:
        """Release the port and every timer; bindings stay in memory for `binding_records`."""
        self._running = False
        self._trunks.stop()
        if self._multicast is not None:
            self._multicast.close()
            self._multicast = None
        self._guard.close()
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

    def call_snapshots(self) -> list[CallSnapshot]:
        """Immutable snapshots of the calls in progress, oldest first (`sip_core.call_snapshot`):
        what code outside call control (Home Assistant) reads instead of the live calls."""
        parties = self._b2bua.all_call_parties()
        return [snapshot_of(call, found) for call, found in parties.items()]

    def call_snapshot(self, call_id: str) -> CallSnapshot | None:
        """A snapshot of the call in progress with this id, None when there is none."""
        call = self._b2bua.get(call_id)
        return snapshot_of(call, self._b2bua.call_parties(call)) if call is not None else None

    def device_activity(self, device: str) -> DeviceActivity | None:
        """What ``device`` (a SIP username) is doing in its busiest call, None when idle."""
        return self._b2bua.device_activity(device)

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

    def play(
        self,
        playback: Playback,
        *,
        device: str | None = None,
        user: str | None = None,
        side: PlaySide = PlaySide.BOTH,
        call_id: str | None = None,
    ) -> CallPlayback:
        """Play audio into the call of ``device`` (a SIP username) or ``user`` (a user's name),
        to the ``side`` that should hear it, without ending the call (`sip_core.call_audio`).
        ``call_id`` names the call (the one `check_play` found): when that call has ended, or
        the party is not in it, this is `NoCallInProgress` rather than another call.

        Raises a `sip_core.call_audio.CallAudioError` (UnknownParty, NoCallInProgress,
        CallNotAnswered, NoGeneratedAudio) before anything plays. Must be called on the loop.
        """
        call, own = self._call_to_play(device, user, call_id)
        return play_into_call(call, own, playback, side)

    def announce(
        self,
        playback: Playback,
        *,
        device: str | None = None,
        user: str | None = None,
        repeat: int = 1,
        caller_id: CallerId | None = None,
        ring_timeout: float = DEFAULT_RING_TIMEOUT,
        group: str | None = None,
    ) -> asyncio.Future[AnnounceResult]:
        """Ring ``device`` (a SIP username), every device of ``user`` (a user's name) or every
        present, available member of ``group`` (a Personal Ring Group's name) from the
        PBX, shown as ``caller_id`` ("Home Assistant"); the first to answer hears ``playback``
        ``repeat`` times, then the PBX hangs up (`sip_core.features.announce`).

        Raises `sip_core.call.originate.OriginateError` (UnknownTarget, NothingToRing),
        ValueError (repeat, timeout) or `RelayError` before anything rings; the future says
        whether it was answered and by which device. Must be called on the loop."""
        return self._b2bua.announce(
            playback,
            device=device,
            user=user,
            group=group,
            repeat=repeat,
            caller_id=caller_id,
            ring_timeout=ring_timeout,
        )

    def call_number(
        self, device: str, number: str, *, ring_timeout: float = DEFAULT_RING_TIMEOUT
    ) -> tuple[str, asyncio.Future[ClickToDialResult]]:
        """Click to dial: ring ``device`` (showing ``number``); when it answers, call ``number``
        for it (an extension, a device, a user's name, or out through a trunk if its user may)
        and connect the two, ringback meanwhile (`sip_core.features.click_to_dial`).

        Raises `sip_core.call.originate.OriginateError` (UnknownTarget, NothingToRing, and the
        `ClickToDialError`s UnknownNumber, MayNotCallOut, NumberUnavailable), ValueError or
        `RelayError` before anything rings. Must be called on the loop."""
        placed, outcome = self._b2bua.click_to_dial(device, number, ring_timeout=ring_timeout)
        return placed.id, outcome  # the call's id: callers read it through snapshots

    def set_label_prompt(self, device: str, wav_path: str | None) -> None:
        """The flip menu speaks ``device``'s line ("press 2 for ...") with this WAV file, a
        recording of its label (Home Assistant has it spoken by a text-to-speech engine, ahead of
        any call), instead of the bundled type prompt; None goes back to the type prompt. The
        file is read and converted by the media engine at once (a short WAV, at most
        `sip_core.audio.playback.MAX_PART_SECONDS`), with the menu's words, so a menu starts
        without waiting for it; one it cannot play makes that menu use the bundled prompts.
        ValueError for a device that is not configured."""
        if not any(d.username == device for u in self._config.users for d in u.devices):
            raise ValueError(f"no device {device!r}")
        self._b2bua.flip_feature.set_label_prompt(device, wav_path)
        if wav_path:  # converted by the media engine now, not when the first menu plays
            self._relay.prepare(label_prompt_assets(wav_path))

    @property
    def label_prompts(self) -> dict[str, str]:
        """Device username -> the WAV file its flip menu line uses (`set_label_prompt`)."""
        return self._b2bua.flip_feature.label_prompts

    def check_play(
        self,
        *,
        device: str | None = None,
        user: str | None = None,
        side: PlaySide = PlaySide.BOTH,
    ) -> str:
        """Whether `play` could start now (the same refusals, raised), without playing: for a
        caller that needs time to make the audio first. Returns the call's id for `play`."""
        call, own = self._call_to_play(device, user, None)
        playable_legs(call, own, side)
        return call.id

    def _call_to_play(
        self, device: str | None, user: str | None, call_id: str | None
    ) -> tuple[Call, Leg | None]:
        if call_id is None:
            calls = self.calls()
        else:
            found = self.call(call_id)
            calls = [found] if found is not None else []
        return find_call(calls, self._config.users, device=device, user=user)

    # -- per-device and per-user runtime settings (sip_core.presence) ------------------------------

    @property
    def presence(self) -> Presence:
        """DND, Make Busy, Call Forward Always and flip permission; `Presence.subscribe` tells of
        changes. Saved in the ``presence`` section of the runtime state given as ``state``."""
        return self._b2bua.presence

    def device_states(self, device: str) -> DeviceStates:
        """A device's settings; `sip_core.presence.UnknownDeviceError` for an unknown device."""
        return self._b2bua.presence.device(device)

    def set_dnd(self, device: str, on: bool) -> None:
        """Do Not Disturb: the device is not rung (alone, its callers get 486 Busy Here)."""
        self._b2bua.presence.set_dnd(device, on)

    def set_make_busy(self, device: str, on: bool) -> None:
        """Make Busy: the device looks busy (not rung, counted as busy)."""
        self._b2bua.presence.set_make_busy(device, on)

    def set_call_forward(self, device: str, target: ForwardTarget | str | None) -> None:
        """Call Forward Always to a device or user (``"device:202"``, ``"user:bob"``); None or
        "" stops it. `sip_core.presence.PresenceError` for an unknown device or target."""
        self._b2bua.presence.set_forward(device, target)

    def flip_enabled(self, user: str) -> bool:
        """Whether the user may flip now (the administrator's ``flip`` setting wins)."""
        return self._b2bua.presence.flip_enabled(user)

    def set_user_flip(self, user: str, on: bool) -> None:
        """The user's own flip setting; `sip_core.presence.UnknownUserError` for a bad name."""
        self._b2bua.presence.set_user_flip(user, on)

    def transfer(
        self, call_id: str, target: str, *, device: str | None = None
    ) -> asyncio.Future[TransferRecord]:
        """Blind-transfer a call: ``device``'s side (default: the callee's) leaves, the other
        party is passed to ``target`` (an extension or a device's username).

        Raises a `sip_core.features.transfer.TransferError` subclass when it cannot start
        (TransferCallNotFound, CallNotTransferable, TransferInProgress, UnknownTransferTarget).
        The future resolves to the `TransferRecord` (``succeeded`` or not; a failed transfer rings
        the transferring device back); the transfer events say the same. On the event loop.
        """
        return self._b2bua.transfer(call_id, target, device=device)

    def hangup(self, call_id: str) -> bool:
        """End a call (both sides); false when there is no such call in progress."""
        return self._b2bua.hangup(call_id)

    def trunk_states(self) -> list[TrunkState]:
        """Where each registering trunk stands (`TrunkStateChanged` events say the same)."""
        return self._trunks.states()

    async def update_trunking(self, trunking: Trunking | None) -> None:
        """Apply changed trunks and dial plan without a restart (calls in progress stay up):
        new host names are resolved first, then unchanged trunks stay registered and the
        others re-register (`TrunkRegistrations.update`)."""
        self._config = replace(self._config, trunking=trunking)
        await self._resolve_trunk_hosts()
        self._trunk_tls.apply(trunking.trunks if trunking is not None else ())
        self._trunks.update(trunking.trunks if trunking is not None else ())

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

    def stats(self) -> PbxStats:
        """Counters of everything the PBX holds open (calls, dialogs, transactions, TCP
        connections, media sessions and ports, timers when the clock is a `CountingClock`); when
        idle, `PbxStats.open_items` are all zero."""
        b2bua = self._b2bua.open_counts()
        ports = self._relay.ports
        return PbxStats(
            calls=b2bua["calls"],
            dialogs=b2bua["dialogs"],
            invites=b2bua["invites"],
            collectors=b2bua["collectors"],
            call_tasks=b2bua["call_tasks"],
            server_transactions=self._transactions.server_count,
            client_transactions=self._transactions.client_count,
            pending_2xx=self._transactions.pending_2xx_count,
            transaction_timers=self._transactions.wheel_count,
            connections=self._transport.connection_count,
            media_sessions=len(self._relay.sessions),
            media_ports=ports.capacity - ports.available,
            bindings=len(self._registrar.store.all()),
            history=len(self._b2bua.history),
            timers=self._clock.pending if isinstance(self._clock, CountingClock) else None,
        )

    def media_engine_status(self) -> EngineStatus:
        """How the media engine runs: its packet path, scheduling and restarts (diagnostics)."""
        return self._relay.status()

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

    @property
    def phones(self) -> PhoneDirectory:
        """Phones noticed on the network (plug-and-play, unknown REGISTERs; Home Assistant adds
        mDNS finds with `PhoneDirectory.observe`)."""
        return self._phones

    @property
    def provisioner(self) -> Provisioner:
        """Armed adoptions; `Provisioner.fetch` serves a phone its configuration file once."""
        return self._provisioner

    @property
    def plug_and_play_listening(self) -> bool:
        """Whether plug-and-play SUBSCRIBEs reach us (the group was joined)."""
        return (self._multicast is not None and self._multicast.running) or self._joined

    def set_provisioning_url(self, base: str | None) -> None:
        """Where configuration files are served: a URL the token's path is appended to, with
        ``{host}`` standing for our address as the phone sees it; None: nothing serves them,
        so no phone is answered."""
        self._provisioning_url = base

    def adopt(self, mac: str, username: str) -> Adoption:
        """Arm a one-time adoption of a phone found by plug-and-play as device ``username``.

        Raises ValueError (with a readable reason) when the phone was not found by plug-and-play
        or its vendor's file format is not supported. The device may still be on its way into the
        configuration: the file is written from the configuration at the moment it is fetched.
        """
        key = normalise_mac(mac)
        phone = self._phones.get(key) if key else None
        if phone is None or key is None or DiscoverySource.PLUG_AND_PLAY not in phone.sources:
            raise ValueError(f"no phone with MAC {mac} asked for plug-and-play provisioning")
        config_format = format_for(phone.vendor or phone.identity.manufacturer)
        if config_format is None:
            raise ValueError(f"{phone.identity.describe()} phones cannot be provisioned")
        return self._provisioner.arm(
            mac=key,
            host=phone.host,
            username=username,
            config_format=config_format,
            server_host=self.server_host_for(phone.host),
            server_port=self._transport.local_address.port,
        )

    def server_host_for(self, phone_host: str) -> str:
        """Our address as a phone at ``phone_host`` reaches it (the listen address, unless that
        is the wildcard)."""
        listen = self._transport.local_address.host
        if listen in ("0.0.0.0", "::", ""):
            return self._plugplay.route_host(phone_host)
        return listen

    def bans(self) -> list[Ban]:
        """Source addresses banned for failing to authenticate (`sip_core.guard`), oldest first."""
        return self._guard.bans()

    def update_security(self, settings: SecuritySettings) -> None:
        """Apply new `SecuritySettings` at once (bans in force stay until they end)."""
        self._config = replace(self._config, security=settings)
        self._guard.update(settings)

    def update_transfer(self, settings: TransferSettings) -> None:
        """Apply new `TransferSettings` at once: each step of a transfer reads them as it comes
        (the codes with a leg's first digit, the times when a target or recall starts ringing)."""
        self._config = replace(self._config, transfer=settings)

    def unban(self, address: str) -> bool:
        """Lift a ban now; false when the address is not banned, ValueError when not an IP."""
        return self._guard.unban(address)

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
        if self._guard.admit(message, source) is not None:
            return  # banned, a scanner, out of scope or flooding: not even an answer
        self._transactions.receive(message, source)

    def _on_stray_response(self, response: Response, source: Source) -> None:
        try:
            self._b2bua.stray_response(response, source)
        except ParseError as err:
            # Headers are parsed when first read: a stray response whose From (or CSeq...) is
            # broken only shows it here. It belongs to nothing of ours, so it is dropped.
            _LOGGER.debug("Dropped a stray response from %s: %s", source.remote, err)

    def _on_request(self, request: Request, txn: ServerTransaction | None, source: Source) -> None:
        if txn is None:
            # An ACK for a 2xx: it belongs to a call.
            self._b2bua.handle_request(request, None, source)
            return
        method = request.method
        if method == "REGISTER":
            response = self._registrar.handle_register(request, source)
            txn.respond(self._stamp(response))
            self._schedule_expiry()
            self._note_register(request, source, response.status)
            return
        if method == "SUBSCRIBE" and is_ua_profile(request):
            self._plugplay.handle(request, txn, source)
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
        if method == "REFER" and not request.to.tag:
            # A phone's transfer button works inside a call (sip_core.features.refer).
            _LOGGER.info("Rejected REFER from %s: not inside a call", source.remote)
            response = make_response(request, 403)
            response.headers.add("Warning", '399 callflip "REFER is taken only in a call"')
            txn.respond(self._stamp(response))
            return
        if method in CALL_METHODS or (method in ("OPTIONS", "REFER") and request.to.tag):
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

    async def _resolve_trunk_hosts(self) -> None:
        """The trunks' host names as IP addresses, so that their INVITEs are recognised."""
        loop = asyncio.get_running_loop()
        for host in self._ingress.hosts_to_resolve():
            try:
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            except OSError as err:
                _LOGGER.warning("Trunk host %s does not resolve: %s", host, err)
                continue
            self._ingress.addresses[host] = frozenset(str(info[4][0]) for info in infos)

    def _trunk_local_host(self, host: str) -> str:
        """Our address towards a trunk's host, by the address it resolved to at start (so that
        finding the route never looks a name up on the event loop)."""
        resolved = sorted(self._ingress.addresses.get(host, ()))
        return self.server_host_for(resolved[0] if resolved else host)

    # -- discovery ---------------------------------------------------------------------------

    async def _start_plug_and_play(self) -> None:
        """Hear plug-and-play SUBSCRIBEs on the interface we listen on (`sip_core.plugplay`)."""
        if not self._config.discovery.plug_and_play:
            return
        listen = self._transport.local_address.host
        try:
            address = ipaddress.ip_address(listen)
        except ValueError:
            address = ipaddress.ip_address("127.0.0.1")  # "localhost"
        if address.is_loopback:
            _LOGGER.debug("Plug-and-play discovery is off: listening on loopback only")
            return
        if address.version != 4:
            _LOGGER.info(
                "Plug-and-play discovery is off: it is IPv4 multicast, and the PBX listens on %s",
                listen,
            )
            return
        if address.is_unspecified and self._transport.local_address.port == PNP_PORT:
            # No second socket can bind the wildcard's port: ours joins the group itself.
            try:
                self._transport.join_multicast(PNP_GROUP, listen)
            except OSError as err:
                _LOGGER.warning(
                    "Plug-and-play discovery is off: cannot join %s on the SIP socket: %s",
                    PNP_GROUP,
                    err.strerror or err,
                )
                return
            self._joined = True
            _LOGGER.info("Listening for plug-and-play requests on %s:%d", PNP_GROUP, PNP_PORT)
            return
        listener = MulticastListener(listen, self._receive_multicast)
        if await listener.start():
            self._multicast = listener

    def _receive_multicast(self, data: bytes, remote: Address) -> None:
        """A datagram to the plug-and-play group: handled like one that came to our port."""
        self._transport.receive_forwarded(data, remote, None)

    def _send_notify(
        self,
        request: Request,
        destination: Address,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
    ) -> None:
        self._transactions.send_request(
            request,
            destination,
            TransportKind.UDP,
            on_response=on_response,
            on_timeout=on_timeout,
        )

    def _provisioning_base(self, local_host: str) -> str | None:
        base = self._provisioning_url
        return base.replace("{host}", local_host) if base else None

    def _provisioning_account(self, username: str) -> tuple[str, str] | None:
        device = self._config.device(username)
        return (device.password, device.label) if device is not None else None

    def _note_register(self, request: Request, source: Source, status: int) -> None:
        """A successful REGISTER completes an adoption; one for a username nobody configured,
        from a local address, is a phone looking for its PBX."""
        if status == 200:
            if self._provisioner.active:
                try:
                    username = request.to.uri.user_unescaped
                except ValueError:
                    return
                if username:
                    self._provisioner.registered(username)
            return
        if status != 401 or "Authorization" in request.headers:
            return
        try:
            username = request.to.uri.user_unescaped
        except ValueError:
            return
        if not username or username in self._credentials:
            return
        host = source.remote.host
        if not is_local_address(host):
            return
        user_agent = request.headers.get("User-Agent")
        self._phones.observe(
            Sighting(
                DiscoverySource.REGISTER,
                host,
                parse_user_agent(user_agent),
                port=source.remote.port,
                username=username,
                user_agent=user_agent,
            )
        )

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


def _tls_listener(config: PbxConfig) -> dict[str, Any]:
    """The transport's TLS listener arguments from the ``tls`` section (none without it)."""
    if config.tls is None:
        return {}
    return {
        "tls_context": server_context(config.tls.certificate, config.tls.key),
        "tls_port": config.tls.port,
    }


def _history(records: Sequence[CallRecord] | None) -> CallHistory:
    """The call history, with the records a previous run saved (oldest first)."""
    history = CallHistory()
    if records:
        history.extend(records)
    return history


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
