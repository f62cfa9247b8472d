"""The back-to-back user agent the PBX facade drives: call control with the features plugged in.

`B2bua` is `sip_core.call.control.CallControl` (calls: set-up, in-call requests, tear-down, and the
API features use) plus the features of `sip_core.features`, wired to call control's hooks: the
feature-code table (`FeatureRegistry`), the flip (`Flip`, the ``*0`` code and `B2bua.flip`) and
transfers (`Transfer`, blind: the ``*2`` code and `B2bua.transfer`; `AttendedTransfer`, the ``**``
code; `Refer`, REFER in a call; `InviteReplaces`, a device taking over its user's call).
It is the one place where call control and features meet, so call control never imports a
feature, and the facade (`sip_core.pbx`), tests and Home Assistant keep one object to talk to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from sip_core.audio.playback import Playback
from sip_core.call.control import ALLOWED_METHODS, CallControl
from sip_core.call.messages import Responder
from sip_core.call.originate import CallerId
from sip_core.call.session_timer import MIN_SESSION_EXPIRES, negotiate_session_timer
from sip_core.calls import Call, CallHistory, HandoffRecord, Leg, TransferRecord
from sip_core.clock import Clock
from sip_core.config import PbxConfig
from sip_core.digest import AuthResult, DigestAuthenticator
from sip_core.events import PbxEvent
from sip_core.features.announce import DEFAULT_RING_TIMEOUT, Announce, AnnounceResult
from sip_core.features.attended import AttendedTransfer
from sip_core.features.click_to_dial import ClickToDial, ClickToDialResult
from sip_core.features.codes import FeatureCode, FeatureMatch
from sip_core.features.flip import Flip
from sip_core.features.group_presence_codes import GroupPresenceCodes
from sip_core.features.handoff import Handoff, PullOperation, PushOperation
from sip_core.features.refer import Refer
from sip_core.features.registry import FeatureRegistry
from sip_core.features.replaces import InviteReplaces
from sip_core.features.ring_group import GroupCalls
from sip_core.features.transfer import Transfer
from sip_core.media import MediaRelay
from sip_core.message import Request
from sip_core.presence import Presence
from sip_core.prg.presence import GroupPresence
from sip_core.registrar import Binding
from sip_core.transaction import TransactionLayer
from sip_core.transport import Source
from sip_core.trunk.egress import TrunkEgress
from sip_core.trunk.ingress import TrunkIngress

__all__ = [
    "ALLOWED_METHODS",
    "MIN_SESSION_EXPIRES",
    "B2bua",
    "negotiate_session_timer",
]


class B2bua(CallControl):
    """Call control with the features (see the module docstring); `flip` is the flip's entry."""

    def __init__(
        self,
        transactions: TransactionLayer,
        clock: Clock,
        *,
        config: Callable[[], PbxConfig],
        authenticator: DigestAuthenticator,
        bindings: Callable[[str], Sequence[Binding]],
        relay: MediaRelay,
        publish: Callable[[PbxEvent], None],
        respond: Responder,
        local_port: Callable[[], int],
        history: CallHistory | None = None,
        listening: Callable[[], bool] | None = None,
        on_auth: Callable[[Source, Request, AuthResult], None] | None = None,
        presence: Presence | None = None,
        ingress: TrunkIngress | None = None,
        egress: TrunkEgress | None = None,
        group_presence: GroupPresence | None = None,
        tls_port: Callable[[], int | None] | None = None,
    ) -> None:
        group_presence = group_presence or GroupPresence(config)
        if presence is None:  # a forward to a group rings its present members only
            presence = Presence(config, group_present=group_presence.present)
        super().__init__(
            transactions,
            clock,
            config=config,
            authenticator=authenticator,
            bindings=bindings,
            relay=relay,
            publish=publish,
            respond=respond,
            local_port=local_port,
            history=history,
            listening=listening,
            on_auth=on_auth,
            presence=presence,
            ingress=ingress,
            egress=egress,
            tls_port=tls_port,
        )
        self.features = FeatureRegistry(self)
        self._flip = Flip(self, capture=self.features.capture, release=self.features.release)
        self.features.add_code(self._flip_code, self._flip_dialled)
        self._transfer = Transfer(self)
        self.features.add_code(self._blind_code, self._blind_dialled)
        self._attended = AttendedTransfer(self, self._transfer)
        self.features.add_code(self._attended_code, self._attended_dialled)
        self.features.add_digit_taker(self._attended.take_digit)
        self._refer = Refer(self, self._transfer)
        self.features.add_in_call(self._refer.on_request)
        self.features.add_replaces(InviteReplaces(self).on_invite)
        self.group_presence = group_presence
        self.handoff = Handoff(self, self.group_presence)
        self.features.add_code(self._handoff_code, self._handoff_dialled)
        self.features.add_dialled(self.handoff.on_dialled)
        self.presence_codes = GroupPresenceCodes(self, self.group_presence)
        self.features.add_dialled(self.presence_codes.on_dialled)
        self.group_calls = GroupCalls(self, self.group_presence, self.presence.available)
        self.hooks.route_number = self.group_calls.route
        self._announce = Announce(self)
        self._click_to_dial = ClickToDial(self)

    def flip(
        self,
        call_id: str,
        target: str | None = None,
        timeout: float | None = None,
        *,
        device: str | None = None,
    ) -> asyncio.Future[HandoffRecord]:
        """Move one side of an answered call to another device of the same user (`Flip.flip`)."""
        return self._flip.flip(call_id, target, timeout, device=device)

    def transfer(
        self, call_id: str, target: str, *, device: str | None = None
    ) -> asyncio.Future[TransferRecord]:
        """Blind-transfer a call: ``device``'s side leaves, the other goes to ``target``
        (`Transfer.transfer`)."""
        return self._transfer.transfer(call_id, target, device=device)

    @property
    def flip_feature(self) -> Flip:
        """The flip (its rules: ``is_available``, ``flip_enabled``; `CallControl.in_call`)."""
        return self._flip

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
        """Ring a device, user or Personal Ring Group from the PBX and play a message when
        answered (`Announce.announce`)."""
        return self._announce.announce(
            playback,
            device=device,
            user=user,
            group=group,
            repeat=repeat,
            caller_id=caller_id,
            ring_timeout=ring_timeout,
        )

    def click_to_dial(
        self, device: str, number: str, *, ring_timeout: float = DEFAULT_RING_TIMEOUT
    ) -> tuple[Call, asyncio.Future[ClickToDialResult]]:
        """Ring ``device``, then connect it to ``number`` (`ClickToDial.call`)."""
        return self._click_to_dial.call(device, number, ring_timeout=ring_timeout)

    def _flip_code(self) -> FeatureCode:
        # No argument: the code is complete the moment it is keyed, so an automatic flip rings
        # at once; a device number after it is read by the flip's menu (features/flip_menu.py).
        return FeatureCode(self.config().flip.code, "flip")

    def _flip_dialled(self, leg: Leg, match: FeatureMatch) -> None:
        self._flip.on_code(leg, match.code)

    def _blind_code(self) -> FeatureCode:
        return FeatureCode(self.config().transfer.blind_code, "blind_transfer", argument=True)

    def _blind_dialled(self, leg: Leg, match: FeatureMatch) -> None:
        self._transfer.on_code(leg, match.argument)

    def _attended_code(self) -> FeatureCode:
        return FeatureCode(self.config().transfer.attended_code, "attended_transfer", argument=True)

    def _attended_dialled(self, leg: Leg, match: FeatureMatch) -> None:
        self._attended.on_code(leg, match.argument)

    def push(
        self, call_id: str, device: str | None = None, group: str | None = None
    ) -> PushOperation:
        """Push a call to its device's Personal Ring Group (`Handoff.push`)."""
        return self.handoff.push(call_id, device, group)

    def pull(self, device: str) -> PullOperation:
        """Pull the group's in-progress call to ``device`` (`Handoff.pull`: it rings)."""
        return self.handoff.pull(device)

    def _handoff_code(self) -> FeatureCode:
        return FeatureCode(self.config().handoff.code, "handoff")

    def _handoff_dialled(self, leg: Leg, _match: FeatureMatch) -> None:
        self.handoff.on_code(leg)
