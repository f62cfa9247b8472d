"""Digits a device dials in a call: INFO and RFC 4733 into a per-leg digit sink, or passed on.

Why a sink rather than the feature-code collector itself: which digits are a feature code is a
feature's business (`sip_core.features.codes`), and call control never imports a feature. Call
control asks a hook (``sinks``) for one sink per leg and DTMF method once the call is
answered; without a hook, or when the hook gives none (a leg that may not dial codes), every digit
goes on to the far end unchanged, as it came: a telephone-event again (with the far end's payload
type) when it came as one, else an INFO. A trunk's leg is never asked for a sink: an outside
caller cannot dial a feature code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sip_core.call.messages import Signalling, is_open, limit_hops
from sip_core.calls import Call, Leg, LegState, Side
from sip_core.dtmf import DtmfDigit, DtmfError, format_dtmf_relay, parse_dtmf_info
from sip_core.events import DtmfMethod, DtmfReceived, PbxEvent
from sip_core.message import Request, Response
from sip_core.transaction import ServerTransaction
from sip_core.trunk.ingress import is_trunk_device

__all__ = ["DTMF_TYPES", "DigitSink", "Digits", "SinkFactory"]

DTMF_TYPES = frozenset({"application/dtmf-relay", "application/dtmf"})


class DigitSink(Protocol):
    """Takes a leg's digits one at a time; what it does not keep it passes on itself."""

    def feed(self, digit: str) -> None: ...

    def close(self) -> None: ...


#: (leg, pass_on) -> the sink for that leg's digits, or None to pass every digit on.
SinkFactory = Callable[[Leg, Callable[[str], None]], DigitSink | None]


class Digits:
    """Routes every digit of every call: to the leg's sink, or on to the far end."""

    def __init__(
        self, link: Signalling, publish: Callable[[PbxEvent], None], sinks: SinkFactory
    ) -> None:
        self._link = link
        self._publish = publish
        self._make_sink = sinks  # the hook that makes a leg's sink (the feature-code collector)
        self._sinks: dict[tuple[Leg, DtmfMethod], DigitSink | None] = {}

    def info(self, leg: Leg, request: Request, txn: ServerTransaction) -> None:
        """An in-dialog INFO: a DTMF body is a digit; any other INFO goes to the far end."""
        call = leg.call
        content_type = request.content_type or ""
        if content_type in DTMF_TYPES:
            try:
                digit = parse_dtmf_info(request.headers.get("Content-Type") or "", request.body)
            except DtmfError as exc:
                self._link.reply(txn, request, 400, str(exc))
                return
            self._link.reply(txn, request, 200)
            self.digit(leg, digit.digit, DtmfMethod.INFO)
            return
        other = call.other(leg)
        if other is None or other.dialog is None or other.state is not LegState.CONFIRMED:
            self._link.reply(txn, request, 200)
            return
        forwarded = other.dialog.create_request(
            "INFO", body=request.body, content_type=request.headers.get("Content-Type")
        )
        limit_hops(forwarded, request.max_forwards)

        def relay(response: Response) -> None:
            if response.status >= 200 and is_open(txn):
                self._link.reply(txn, request, response.status)

        def timeout() -> None:
            if is_open(txn):
                self._link.reply(txn, request, 408)

        self._link.send_in_dialog(other, forwarded, relay, timeout)

    def on_rtp(self, call: Call, side: Side, digit: DtmfDigit) -> None:
        """A telephone-event the relay stopped (`MediaSession.on_dtmf`)."""
        leg = call.caller if side == "a" else call.callee
        if leg is not None and call.active:
            self.digit(leg, digit.digit, DtmfMethod.RFC4733)
        elif call.active and call.media is not None and not call.media.closed:
            # early media from a callee not chosen yet: nothing to collect, pass it on
            call.media.leg(side).other.send_dtmf(digit.digit)

    def digit(self, leg: Leg, digit: str, method: DtmfMethod) -> None:
        call = leg.call
        self._publish(DtmfReceived(call.id, leg.device, digit, method))
        if not call.answered or (leg is not call.caller and leg is not call.callee):
            self.pass_digit(leg, digit, method)  # no feature codes before the answer
            return
        media = call.media
        if (
            method is DtmfMethod.INFO
            and media is not None
            and not media.closed
            and media.offer_digit(leg.side, digit)
        ):
            return  # a digit collection on this leg (`CallControl.collect`) took it
        if is_trunk_device(leg.device):
            self.pass_digit(leg, digit, method)  # an outside caller cannot dial a feature code
            return
        key = (leg, method)
        if key in self._sinks:
            sink = self._sinks[key]
        else:
            sink = self._make_sink(leg, lambda passed: self.pass_digit(leg, passed, method))
            self._sinks[key] = sink
        if sink is None:
            self.pass_digit(leg, digit, method)
        else:
            sink.feed(digit)

    def pass_digit(self, leg: Leg, digit: str, method: DtmfMethod) -> None:
        """A digit that is not part of a feature code goes on to the far end.

        Key presses that came as telephone-events were stopped at the relay, so they are sent
        again as telephone-events on the stream towards the far end, with its payload type; a far
        end without telephone-event (and digits that came by INFO) gets an INFO.
        """
        call = leg.call
        media = call.media
        if (
            method is DtmfMethod.RFC4733
            and media is not None
            and not media.closed
            and media.leg(leg.side).other.send_dtmf(digit)
        ):
            return
        other = call.other(leg)
        if other is None or other.dialog is None or other.state is not LegState.CONFIRMED:
            return
        info = other.dialog.create_request(
            "INFO", body=format_dtmf_relay(digit), content_type="application/dtmf-relay"
        )
        self._link.send_in_dialog(other, info)

    def open_sinks(self) -> int:
        """How many legs' digit sinks are held (a leak check: zero once every call ended)."""
        return len(self._sinks)

    def drop(self, leg: Leg) -> None:
        """The leg left the call: its sinks forget held digits and stop their timers."""
        for method in DtmfMethod:
            sink = self._sinks.pop((leg, method), None)
            if sink is not None:
                sink.close()
