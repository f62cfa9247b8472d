"""Small pieces every part of call control uses to read and send SIP: SDP bodies, replies.

`Signalling` is what a part of call control (session timers, digits, forking) needs from the rest:
sending in a dialog, ACKing, answering a request, learning a device's SDP and ending a call. It is
a protocol so that those parts stay small modules that do not import the controller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sip_core.calls import Call, CallOutcome, Leg
from sip_core.dialog import Dialog
from sip_core.message import Request, Response
from sip_core.sdp import SdpError, SessionDescription, parse_sdp
from sip_core.transaction import ServerTransaction, TransactionState

__all__ = [
    "SDP",
    "Responder",
    "Signalling",
    "ignore",
    "is_open",
    "limit_hops",
    "nothing",
    "parse_body",
]

SDP = "application/sdp"

Responder = Callable[[ServerTransaction, Response], None]


class Signalling(Protocol):
    """What the parts of call control use of the controller (see the module docstring)."""

    def send_in_dialog(
        self,
        leg: Leg,
        request: Request,
        on_response: Callable[[Response], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> None: ...

    def send_ack(self, ack: Request, dialog: Dialog) -> None: ...

    def respond(self, txn: ServerTransaction, response: Response) -> None: ...

    def reply(
        self,
        txn: ServerTransaction,
        request: Request,
        status: int,
        why: str = "",
        *,
        to_tag: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None: ...

    def learn_sdp(self, leg: Leg, sdp: SessionDescription) -> None: ...

    def terminate(
        self,
        call: Call,
        outcome: CallOutcome,
        reason: str,
        status: int = 480,
        *,
        skip: Leg | None = None,
    ) -> None: ...


def parse_body(message: Request | Response) -> SessionDescription | None:
    """The SDP of a message; None without a body. Raises SdpError for a bad one."""
    if not message.body:
        return None
    content_type = message.content_type
    if content_type is not None and content_type != SDP:
        raise SdpError(f"body is {content_type}, not SDP")
    return parse_sdp(message.body)


def is_open(txn: ServerTransaction) -> bool:
    """Whether a server transaction still waits for its final response."""
    return txn.state in (TransactionState.TRYING, TransactionState.PROCEEDING)


def ignore(response: Response) -> None:
    return None


def nothing() -> None:
    return None


def limit_hops(outgoing: Request, incoming: int | None) -> None:
    """A request we make from one we received never has more hops left than it had (RFC 3261
    §16.6 step 3 applied across the B2BUA): otherwise two PBXes, or a device registered with our
    own address as its contact, would pass a call back and forth for ever. ``incoming`` is the
    Max-Forwards the received request had (None: it had none, and ours keeps the default 70)."""
    if incoming is not None and incoming - 1 < (outgoing.max_forwards or 0):
        outgoing.headers.set("Max-Forwards", str(max(incoming - 1, 0)))
