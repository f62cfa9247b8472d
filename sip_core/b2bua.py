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

from sip_core.call.control import ALLOWED_METHODS, CallControl
from sip_core.call.messages import Responder
from sip_core.call.session_timer import MIN_SESSION_EXPIRES, negotiate_session_timer
from sip_core.calls import CallHistory, HandoffRecord, Leg, TransferRecord
from sip_core.clock import Clock
from sip_core.config import PbxConfig
from sip_core.digest import AuthResult, DigestAuthenticator
from sip_core.events import PbxEvent
from sip_core.features.attended import AttendedTransfer
from sip_core.features.codes import FeatureCode, FeatureMatch
from sip_core.features.flip import Flip
from sip_core.features.refer import Refer
from sip_core.features.registry import FeatureRegistry
from sip_core.features.replaces import InviteReplaces
from sip_core.features.transfer import Transfer
from sip_core.media import MediaRelay
from sip_core.message import Request
from sip_core.presence import Presence
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
    ) -> None:
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
        )
        self.features = FeatureRegistry(self)
        self._flip = Flip(self)
        self.features.add_code(self._flip_code, self._flip_dialled)
        self._transfer = Transfer(self)
        self.features.add_code(self._blind_code, self._blind_dialled)
        self._attended = AttendedTransfer(self, self._transfer)
        self.features.add_code(self._attended_code, self._attended_dialled)
        self.features.add_digit_taker(self._attended.take_digit)
        self._refer = Refer(self, self._transfer)
        self.features.add_in_call(self._refer.on_request)
        self.features.add_replaces(InviteReplaces(self).on_invite)

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

    def _flip_code(self) -> FeatureCode:
        return FeatureCode(self.config().flip.code, "flip", argument=True)

    def _flip_dialled(self, leg: Leg, match: FeatureMatch) -> None:
        self._flip.on_code(leg, match.argument or None)

    def _blind_code(self) -> FeatureCode:
        return FeatureCode(self.config().transfer.blind_code, "blind_transfer", argument=True)

    def _blind_dialled(self, leg: Leg, match: FeatureMatch) -> None:
        self._transfer.on_code(leg, match.argument)

    def _attended_code(self) -> FeatureCode:
        return FeatureCode(self.config().transfer.attended_code, "attended_transfer", argument=True)

    def _attended_dialled(self, leg: Leg, match: FeatureMatch) -> None:
        self._attended.on_code(leg, match.argument)
