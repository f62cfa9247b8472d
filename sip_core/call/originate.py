"""Calls the PBX itself places: no SIP caller, a media source of our own on the calling side.

Why its own module: an announcement ("dinner is ready" to the kitchen phone) or a click-to-dial
starts with the PBX ringing devices, so there is no caller's INVITE to answer and no caller's
offer to pass on. `CallControl.originate` makes such a call: its caller leg stands for the PBX
(device `pbx_device`, never a configured username since it holds a colon, and presented with a
configurable caller ID, "Home Assistant" by default), the targets ring with our own offer
(`pbx_offer`: every codec the media engine can generate, so whatever the device picks can be fed
by it), first answer wins as for any call (`ForkGroup`), and the call is recorded like any other,
its caller shown as the PBX. What the answering device hears is the originator's to play
(`CallControl.play`): the media engine is the caller's voice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sip_core.calls import Call, Leg
from sip_core.sdp import SessionDescription

__all__ = [
    "DEFAULT_CALLER_NAME",
    "CallerId",
    "NothingToRing",
    "OriginateError",
    "Originated",
    "UnknownTarget",
    "pbx_device",
    "pbx_offer",
]

#: The display name devices see when the PBX calls them and nothing else was asked for.
DEFAULT_CALLER_NAME = "Home Assistant"


def pbx_device(purpose: str) -> str:
    """The device name of the PBX's own leg in a call it placed (``pbx:announce``, ...).

    The colon keeps it apart from every SIP username (as ``trunk:<name>`` does for trunks)."""
    return f"pbx:{purpose}"


@dataclass(frozen=True, slots=True)
class CallerId:
    """What a rung device shows as calling: a display name and the number after ``sip:``."""

    name: str = DEFAULT_CALLER_NAME
    number: str = "pbx"

    def __post_init__(self) -> None:
        if not self.number or any(c in self.number for c in ' <>@;"\r\n'):
            raise ValueError(f"a caller ID number cannot be {self.number!r}")
        if any(c in self.name for c in "\r\n"):
            raise ValueError("a caller ID name is one line")


class OriginateError(Exception):
    """A call cannot be placed; the text says why."""


class UnknownTarget(OriginateError):
    """A target is no configured device or user."""


class NothingToRing(OriginateError):
    """No target has a registration to ring; ``busy`` says some were busy (in a call, DND)."""

    def __init__(self, message: str, *, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


@dataclass(frozen=True, slots=True)
class Originated:
    """A call the PBX placed: ``call``, and ``answered``, which resolves to the leg that answered
    (confirmed and ACKed, ready to be played to) or to None when the call ended unanswered (no
    answer within the ring timeout, busy, declined, unreachable, hung up by the PBX)."""

    call: Call
    answered: asyncio.Future[Leg | None]


#: Codecs the media engine encodes (`sip_core.audio.codecs`) and RFC 4733 events, in the order
#: we prefer them: G.711 first (every phone has it), then G.722.
_OFFER_CODECS = (
    (0, "PCMU/8000"),
    (8, "PCMA/8000"),
    (9, "G722/8000"),
    (101, "telephone-event/8000"),
)


def pbx_offer(host: str) -> SessionDescription:
    """Our own offer for a call we place; the address and port are rewritten for the relay leg
    the device is rung with (`Negotiation.sdp_for`)."""
    ip = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=callflip 1 1 IN {ip} {host}",
        "s=callflip",
        f"c=IN {ip} {host}",
        "t=0 0",
        "m=audio 9 RTP/AVP " + " ".join(str(pt) for pt, _ in _OFFER_CODECS),
    ]
    lines += [f"a=rtpmap:{pt} {name}" for pt, name in _OFFER_CODECS]
    lines += ["a=fmtp:101 0-15", "a=ptime:20", "a=sendrecv"]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")
