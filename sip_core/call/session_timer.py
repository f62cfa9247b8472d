"""RFC 4028 session timers: a dead leg is found by a refresh that is missing or fails.

Why in call control and per leg: each device's dialog has its own timer, agreed with that device
alone (we are the UAS of the caller's INVITE and of every re-INVITE or UPDATE a device sends us).
We refresh when the offer or RFC 4028 §9 makes us the refresher, else we expect the device's
refreshes; either way a dialog that stops answering ends the whole call, so no call is left
half-open.
"""

from __future__ import annotations

from sip_core.call.messages import SDP, Signalling, parse_body
from sip_core.calls import CallOutcome, Leg, Refresher, SessionTimer
from sip_core.clock import Clock
from sip_core.message import Request, Response, make_response
from sip_core.sdp import SdpError
from sip_core.transaction import ServerTransaction

__all__ = [
    "MIN_SESSION_EXPIRES",
    "REFRESH_RETRY",
    "SessionTimers",
    "negotiate_session_timer",
    "session_expires",
    "supports",
]

#: RFC 4028 §4: the smallest session interval we accept (and the default minimum).
MIN_SESSION_EXPIRES = 90
#: Seconds before a session refresh that could not go out (an offer was under way, or 491) is
#: tried again.
REFRESH_RETRY = 2.0


def session_expires(request: Request | Response) -> tuple[int, str | None] | None:
    """(interval, refresher) from Session-Expires, or None when absent or unreadable."""
    value = request.headers.get("Session-Expires")
    if not value:
        return None
    head, *params = value.split(";")
    head = head.strip()
    if not head.isdigit():
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
    return int(head), refresher


def supports(message: Request | Response, tag: str, header: str = "Supported") -> bool:
    for value in message.headers.get_all(header):
        if any(part.strip().lower() == tag for part in value.split(",")):
            return True
    return False


def negotiate_session_timer(
    request: Request, current: SessionTimer | None = None
) -> SessionTimer | None:
    """The session timer for a device's INVITE or UPDATE to us, as its UAS (RFC 4028 §9).

    A refresher the request names is kept. Without one, a device that supports timers refreshes
    itself (it asked for the timer, and so we never send re-INVITEs to a phone that only
    tolerates them); a device that does not support them cannot refresh, so we do. A request
    without Session-Expires leaves the timer as it was (``current``): our 2xx may still carry it.
    """
    expires = session_expires(request)
    if expires is None:
        return current
    interval, named = expires
    supported = supports(request, "timer") or supports(request, "timer", "Require")
    if named in (Refresher.UAC, Refresher.UAS):
        refresher = Refresher(named)
    else:
        refresher = Refresher.UAC if supported else Refresher.UAS
    return SessionTimer(interval, refresher, supported)


class SessionTimers:
    """The session timers of every leg: our refreshes, the expiry checks, the 2xx headers."""

    def __init__(self, clock: Clock, link: Signalling) -> None:
        self._clock = clock
        self._link = link

    def stop(self, leg: Leg) -> None:
        """The leg is over: no refresh and no expiry check any more."""
        if leg.session_timer is not None:
            leg.session_timer.cancel()
            leg.session_timer = None

    def headers(self, leg: Leg, response: Response) -> None:
        """Our 2xx to a device's INVITE/UPDATE states the timer agreed with it (RFC 4028 §9)."""
        timer = leg.session
        if timer is None:
            return
        response.headers.add("Session-Expires", f"{timer.interval};refresher={timer.refresher}")
        if timer.required:
            response.headers.add("Require", "timer")

    def arm(self, leg: Leg) -> None:
        """After each refresh: our next refresh at half the interval (§7.2) if we refresh, else
        the expiry check a little before the interval ends (§10)."""
        timer = leg.session
        if timer is None:
            return
        if leg.session_timer is not None:
            leg.session_timer.cancel()
        interval = timer.interval
        leg.session_deadline = self._clock.monotonic() + interval
        if timer.refresher is Refresher.UAS:
            leg.session_timer = self._clock.call_later(
                interval / 2, lambda: self._send_refresh(leg)
            )
        else:
            delay = interval - min(32, interval / 3)
            leg.session_timer = self._clock.call_later(delay, lambda: self._session_expired(leg))

    def refreshed(self, leg: Leg, request: Request) -> None:
        """A re-INVITE or UPDATE from the device: it may renegotiate, and it refreshes."""
        leg.session = negotiate_session_timer(request, leg.session)
        self.arm(leg)

    def local_refresh(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """A bodiless UPDATE changes no media: it refreshes this dialog only, so it is answered
        here rather than passed to a far end that may not even allow UPDATE."""
        assert leg.dialog is not None
        self.refreshed(leg, request)
        leg.dialog.refresh_target(request)
        ok = make_response(request, 200)
        ok.headers.add("Contact", leg.dialog.endpoint.contact)
        self.headers(leg, ok)
        self._link.respond(txn, ok)

    def _send_refresh(self, leg: Leg) -> None:
        """We are the refresher: a bodiless UPDATE if the device allows it, else a re-INVITE
        with the description it already has (same o= version: nothing changes)."""
        leg.session_timer = None
        call = leg.call
        dialog = leg.dialog
        timer = leg.session
        if not call.active or dialog is None or dialog.terminated or timer is None:
            return
        if leg.incoming_offer or leg.outgoing_offer or leg.ack_pending:
            leg.session_timer = self._clock.call_later(
                REFRESH_RETRY, lambda: self._send_refresh(leg)
            )
            return
        # We are the UAC of the refresh transaction, and the refresher.
        extra = (("Session-Expires", f"{timer.interval};refresher=uac"), ("Supported", "timer"))
        if leg.peer_allows_update:
            request = dialog.create_request("UPDATE", extra=extra)
        else:
            body = leg.local_sdp
            request = dialog.create_request(
                "INVITE", body=body, content_type=SDP if body else None, extra=extra
            )
            leg.outgoing_offer = True
        cseq = request.cseq.number
        self._link.send_in_dialog(
            leg,
            request,
            lambda response: self._refresh_answered(leg, response, cseq),
            lambda: self._refresh_failed(leg, 408),
        )

    def _refresh_answered(self, leg: Leg, response: Response, cseq: int) -> None:
        status = response.status
        if status < 200:
            return
        method = response.cseq.method
        dialog = leg.dialog
        if method == "INVITE":
            leg.outgoing_offer = False
        call = leg.call
        if dialog is None or dialog.terminated or not call.active:
            return
        if status < 300:
            if method == "INVITE":
                ack = dialog.create_ack(cseq)
                leg.ack_sent[cseq] = ack
                self._link.send_ack(ack, dialog)
                try:
                    sdp = parse_body(response)
                except SdpError:
                    sdp = None
                if sdp is not None:
                    self._link.learn_sdp(leg, sdp)
            dialog.refresh_target(response)
            expires = session_expires(response)
            timer = leg.session
            if expires is not None and timer is not None:
                # Roles in our refresh: "uac" is us, "uas" the device, which may take over.
                who = Refresher.UAC if expires[1] == Refresher.UAS else Refresher.UAS
                leg.session = SessionTimer(expires[0], who, timer.required)
            self.arm(leg)
        elif status == 491:
            leg.session_timer = self._clock.call_later(
                REFRESH_RETRY, lambda: self._send_refresh(leg)
            )
        elif status in (405, 501) and method == "UPDATE":
            leg.peer_allows_update = False
            self._send_refresh(leg)
        else:
            self._refresh_failed(leg, status)

    def _refresh_failed(self, leg: Leg, status: int) -> None:
        """408/481 (or no answer): the dialog is gone, end the call now. Other refusals: the
        session lasts until it expires (RFC 4028 §10)."""
        if leg.outgoing_offer and status == 408:
            leg.outgoing_offer = False
        call = leg.call
        if not call.active:
            return
        if status in (408, 481):
            self._link.terminate(
                call, CallOutcome.ANSWERED, f"session refresh of {leg.device} failed ({status})"
            )
            return
        delay = max(0.0, leg.session_deadline - self._clock.monotonic())
        leg.session_timer = self._clock.call_later(delay, lambda: self._session_expired(leg))

    def _session_expired(self, leg: Leg) -> None:
        leg.session_timer = None
        call = leg.call
        if call.active:
            self._link.terminate(
                call, CallOutcome.ANSWERED, f"session timer expired on {leg.device}"
            )
