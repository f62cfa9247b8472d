"""Offer/answer across the bridge: each device's SDP as the other must see it, via the relay.

Why its own part of call control: every description a device sends is rewritten so that media
goes through our relay (`sdp_for`), and every description a device gives us tells the relay where
to send that device's audio and in which codecs (`learn_sdp`). A re-INVITE or UPDATE with or
without SDP from one device is passed to the other (`offer`), with 491 when offers would cross
(glare) or a feature operation blocks offers, a refusal passed back, 408/481 ending the call;
an offer made without SDP is answered in the originator's ACK, which we carry across (`acked`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Final

from sip_core.call.messages import SDP, Signalling, is_open, limit_hops, parse_body
from sip_core.call.session_timer import SessionTimers
from sip_core.calls import Call, CallOutcome, CallState, Leg, LegState
from sip_core.dialog import first_cseq
from sip_core.message import Request, Response, make_response
from sip_core.sdp import Direction, Origin, SdpError, SessionDescription, rewrite_for_relay
from sip_core.transaction import InviteServerTransaction, ServerTransaction
from sip_core.transport import Address

__all__ = ["Negotiation", "is_hold", "media_target"]

_NO_ADDRESS: Final = frozenset({"0.0.0.0", "::"})
_HOLD: Final = frozenset({Direction.SENDONLY, Direction.INACTIVE})


def media_target(sdp: SessionDescription) -> tuple[Address | None, Address | None]:
    """Where a description asks its audio to be sent: (RTP, RTCP); None for hold by 0.0.0.0."""
    audio = sdp.audio()
    if audio is None:
        return None, None
    connection = audio.effective_connection(sdp)
    if connection is None or connection.address in _NO_ADDRESS or audio.port == 0:
        return None, None
    rtp = Address(connection.address, audio.port)
    rtcp_info = audio.rtcp
    if rtcp_info is None:
        return rtp, None
    port, rtcp_connection = rtcp_info
    host = rtcp_connection.address if rtcp_connection is not None else connection.address
    return rtp, Address(host, port)


def is_hold(sdp: SessionDescription) -> bool:
    audio = sdp.audio()
    if audio is None:
        return False
    connection = audio.effective_connection(sdp)
    if connection is not None and connection.address in _NO_ADDRESS:
        return True
    return audio.effective_direction(sdp) in _HOLD


class Negotiation:
    """The SDP of every leg of every call (see the module docstring).

    ``relay_host`` gives the address our SDP names before a leg has a dialog; ``set_state`` moves a
    call between talking and held; ``ack_timeout`` is told when a device never ACKs our 2xx to
    its re-INVITE.
    """

    def __init__(
        self,
        link: Signalling,
        timers: SessionTimers,
        *,
        relay_host: Callable[[], str],
        set_state: Callable[[Call, CallState], None],
        ack_timeout: Callable[[tuple[str, str], Response], None],
    ) -> None:
        self._link = link
        self._timers = timers
        self._relay_host = relay_host
        self._set_state = set_state
        self._ack_timeout = ack_timeout

    def sdp_for(self, leg: Leg, description: SessionDescription, port: int | None = None) -> bytes:
        """``description`` (from the other side) as ``leg``'s device must see it: via the relay.

        ``port`` is the relay port for the device (default: its side's current one)."""
        call = leg.call
        if port is None:
            assert call.media is not None
            port = call.media.leg(leg.side).local_rtp.port
        dialog = leg.dialog
        host = dialog.endpoint.host if dialog is not None else self._relay_host()
        if leg.origin is None:
            leg.origin = Origin("callflip", str(first_cseq()), 1, "IN", _ip_type(host), host)
        else:
            leg.origin.session_version += 1
        audio = description.audio()
        ports = [port if media is audio else None for media in description.media]
        body = rewrite_for_relay(description, host, ports, origin=leg.origin).to_bytes()
        leg.local_sdp = body
        return body

    def learn_sdp(self, leg: Leg, sdp: SessionDescription) -> None:
        """A device described its media: the relay sends its audio there, with its codecs."""
        leg.remote_sdp = sdp
        media = leg.call.media
        if media is None or media.closed:
            return
        relay_leg = media.leg(leg.side)
        rtp, rtcp = media_target(sdp)
        relay_leg.set_remote(rtp, rtcp)
        relay_leg.on_hold = is_hold(sdp)
        audio = sdp.audio()
        if audio is not None:
            relay_leg.set_codecs(audio.codecs())

    def acked(self, leg: Leg, ack: Request) -> None:
        """``leg``'s device ACKed our 2xx: if it carried the answer to an offer the other
        device made without SDP (a delayed offer), that device's 2xx gets its ACK now, with it.
        """
        call = leg.call
        other = call.other(leg)
        if other is None or other.deferred_ack is None or other.dialog is None:
            return
        cseq = other.deferred_ack
        other.deferred_ack = None
        body = b""
        try:
            sdp = parse_body(ack)
        except SdpError:
            sdp = None
        if sdp is not None and call.media is not None:
            self.learn_sdp(leg, sdp)
            body = self.sdp_for(other, sdp)
        reply = other.dialog.create_ack(cseq, body=body, content_type=SDP if body else None)
        other.ack_sent[cseq] = reply
        self._link.send_ack(reply, other.dialog)

    def offer(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """A re-INVITE or UPDATE from one device: pass it to the other, or 491 if offers cross."""
        call = leg.call
        other = call.other(leg)
        method = request.method
        if (
            other is None
            or other.dialog is None
            or other.state is not LegState.CONFIRMED
            or call.media is None
        ):
            operation = call.operation
            if operation is not None and operation.owns(leg):
                # A leg a feature added (a flip target answering): not in the call yet.
                why = f"{operation.kind} in progress"
                self._link.reply(txn, request, 491, why, headers=(("Retry-After", "2"),))
            else:
                self._link.reply(txn, request, 491, "call not answered yet")
            return
        if leg.incoming_offer or leg.outgoing_offer or other.incoming_offer or other.outgoing_offer:
            self._link.reply(txn, request, 491, "offers crossed")
            return
        operation = call.operation
        if operation is not None and operation.blocks_offers:
            self._link.reply(txn, request, 491, f"{operation.kind} in progress")
            return
        try:
            sdp = parse_body(request)
        except SdpError as exc:
            self._link.reply(txn, request, 488, str(exc))
            return
        assert leg.dialog is not None
        self._timers.refreshed(leg, request)
        leg.dialog.refresh_target(request)
        previous = leg.remote_sdp
        if sdp is not None:
            self.learn_sdp(leg, sdp)
        body = self.sdp_for(other, sdp) if sdp is not None else b""
        forwarded = other.dialog.create_request(
            method, body=body, content_type=SDP if body else None
        )
        limit_hops(forwarded, request.max_forwards)
        leg.incoming_offer = True
        leg.offer_txn = txn
        other.outgoing_offer = True
        cseq = forwarded.cseq.number

        def on_response(response: Response) -> None:
            self._offer_answered(
                leg,
                other=other,
                request=request,
                txn=txn,
                response=response,
                cseq=cseq,
                offer=sdp,
                previous=previous,
            )

        def on_timeout() -> None:
            leg.incoming_offer = other.outgoing_offer = False
            if is_open(txn):
                self._link.reply(txn, request, 408, f"{other.device} does not answer")
            self._link.terminate(call, CallOutcome.ANSWERED, f"{other.device} stopped answering")

        self._link.send_in_dialog(other, forwarded, on_response, on_timeout)

    def _offer_answered(
        self,
        origin: Leg,
        *,
        other: Leg,
        request: Request,
        txn: ServerTransaction,
        response: Response,
        cseq: int,
        offer: SessionDescription | None,
        previous: SessionDescription | None,
    ) -> None:
        status = response.status
        call = origin.call
        if status < 200:
            return
        origin.incoming_offer = other.outgoing_offer = False
        origin.offer_txn = None
        assert origin.dialog is not None
        assert other.dialog is not None
        method = request.method
        if status >= 300:
            if offer is not None and previous is not None:
                self.learn_sdp(origin, previous)
            headers = [("Retry-After", v) for v in response.headers.get_all("Retry-After")]
            if is_open(txn):
                self._link.reply(txn, request, status, headers=headers)
            if status in (408, 481):
                self._link.terminate(
                    call, CallOutcome.ANSWERED, f"{other.device} lost the dialog ({status})"
                )
            return
        other.dialog.refresh_target(response)
        try:
            answer = parse_body(response)
        except SdpError:
            answer = None
        if method == "INVITE":
            if offer is not None or answer is None:
                ack = other.dialog.create_ack(cseq)
                other.ack_sent[cseq] = ack
                self._link.send_ack(ack, other.dialog)
            else:
                other.deferred_ack = cseq  # the answer comes in the originator's ACK
        body = b""
        if answer is not None:
            self.learn_sdp(other, answer)
            body = self.sdp_for(origin, answer)
        ok = make_response(request, status, body=body)
        ok.headers.add("Contact", origin.dialog.endpoint.contact)
        if body:
            ok.headers.add("Content-Type", SDP)
        self._timers.headers(origin, ok)
        if method == "INVITE":
            origin.ack_pending = True
            if isinstance(txn, InviteServerTransaction):
                txn.on_ack_timeout = partial(self._ack_timeout, origin.dialog.key)
        if is_open(txn):
            self._link.respond(txn, ok)
        description = offer if offer is not None else answer
        if description is not None and call.state in (CallState.TALKING, CallState.HELD):
            self._set_state(call, CallState.HELD if is_hold(description) else CallState.TALKING)


def _ip_type(host: str) -> str:
    return "IP6" if ":" in host else "IP4"
