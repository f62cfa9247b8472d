"""INVITE with Replaces (RFC 3891) from one of our devices: take over a call of the same user.

Why: a phone's "pick up the call from my other phone" (the phone-side form of a pull) is an INVITE
that names the dialog it replaces. The PBX honours it only between devices of one user: the new
device takes the named leg's place in its call (`CallControl.adopt`: answered through a spare
relay leg with the codecs the staying party agreed to, in the device's own payload-type numbering
(`answer_for_new_device`; the relay renumbers, as at call set-up); the replaced device gets a
BYE, the other party's dialog never sees a request). Another user's device gets 403, a dialog
the PBX does not know 481 (as the RFC says), a confirmed dialog named with ``early-only`` 486, an
offer without any of the call's codecs 488, and a call with a feature operation under way 491;
each with a log line.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from sip_core.call.control import CallControl
from sip_core.call.messages import parse_body
from sip_core.calls import LegState
from sip_core.digest import parse_credentials
from sip_core.features.refer import parse_replaces
from sip_core.message import Request
from sip_core.sdp import SdpError, answer_for_new_device
from sip_core.transaction import ServerTransaction
from sip_core.transport import Source

__all__ = ["InviteReplaces"]

_LOGGER = logging.getLogger(__name__)


class InviteReplaces:
    """The Replaces handler of the feature registry (`on_invite`)."""

    def __init__(self, control: CallControl) -> None:
        self._control = control

    def on_invite(self, request: Request, txn: ServerTransaction, source: Source) -> bool:
        control = self._control
        config = control.config()
        device = self._device(request, config.sip.domain)
        try:
            replaces = parse_replaces(unquote(request.headers.get("Replaces") or ""))
        except ValueError as exc:
            return self._refuse(txn, request, device, 400, str(exc))
        leg = control.find_leg(replaces.call_id, replaces.to_tag, replaces.from_tag)
        if leg is None:
            return self._refuse(txn, request, device, 481, "Replaces names no dialog here")
        if replaces.early_only and leg.state is LegState.CONFIRMED:
            return self._refuse(txn, request, device, 486, "the dialog is no longer early")
        owner = config.user_for_device(device)
        if owner is None or config.user_for_device(leg.device or "") is not owner:
            return self._refuse(txn, request, device, 403, "the call is another user's")
        call = leg.call
        staying = call.other(leg)
        if not call.answered or staying is None or staying.remote_sdp is None:
            return self._refuse(txn, request, device, 403, "only an answered call is taken over")
        if call.operation is not None:
            return self._refuse(txn, request, device, 491, f"a {call.operation.kind} is running")
        try:
            offer = parse_body(request)
            if offer is None:
                raise SdpError("an SDP offer is needed")
            answer = answer_for_new_device(staying.remote_sdp, offer, leg.remote_sdp)
        except SdpError as exc:
            return self._refuse(txn, request, device, 488, exc.reason)
        if not control.adopt(request, txn, source, device=device, replacing=leg, answer=answer):
            return self._refuse(txn, request, device, 480, "the call cannot be taken over now")
        return True

    @staticmethod
    def _device(request: Request, realm: str) -> str:
        """The device whose credentials call set-up has just verified on this INVITE."""
        found = ""
        for value in request.headers.get_all("Proxy-Authorization"):
            credentials = parse_credentials(value)
            if credentials is None:
                continue
            username = credentials.get("username") or ""
            if credentials.get("realm") == realm:
                return username
            found = found or username
        return found

    def _refuse(
        self, txn: ServerTransaction, request: Request, device: str, status: int, why: str
    ) -> bool:
        _LOGGER.info("INVITE with Replaces from %s refused with %d: %s", device, status, why)
        self._control.reply(txn, request, status, why)
        return True
