"""Playing audio into a call in progress (an announcement), to one side or both.

Why a module of its own: "say *the front door is open* to Alice, who is on the phone" is a
feature above call control. It finds the call of a device or user, checks that the call is
answered and that the chosen legs' far ends use a codec the media engine can generate (PCMU,
PCMA, G.722), and hands the playback to the call's media session, which sends it to each chosen
leg instead of the other party's audio (paced by the engine; the other party's audio comes back
when it ends). It never ends the call, and never sends SIP.

Sides are told apart by who hears the audio: ``caller`` and ``callee`` name the call's parties
(the callee's side stays the callee's after a flip), ``own`` is the side of the device or user the
request names, ``other`` the party across from it, ``both`` everybody in the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sip_core.audio import Playback, UnsupportedCodec, codec_for
from sip_core.calls import Call, CallState, Leg
from sip_core.config import User
from sip_core.media import Playing

__all__ = [
    "CallAudioError",
    "CallNotAnswered",
    "CallPlayback",
    "NoCallInProgress",
    "NoGeneratedAudio",
    "PlaySide",
    "UnknownParty",
    "find_call",
    "play_into_call",
    "playable_legs",
]


class PlaySide(StrEnum):
    """Who hears a playback."""

    CALLER = "caller"
    CALLEE = "callee"
    OWN = "own"  # the device or user named in the request
    OTHER = "other"  # the party across the call from them
    BOTH = "both"


class CallAudioError(Exception):
    """A playback into a call cannot start; the text says why."""


class UnknownParty(CallAudioError):
    """The device or user named is not configured."""


class NoCallInProgress(CallAudioError):
    """The device or user is in no call."""


class CallNotAnswered(CallAudioError):
    """The call rings still, or is ending: there is nobody to play to yet (or any more)."""


class NoGeneratedAudio(CallAudioError):
    """A chosen leg's far end takes none of the codecs the engine can generate (Opus only, say).

    ``device`` is that leg's device, ``encodings`` what its SDP offers.
    """

    def __init__(self, device: str, encodings: Sequence[str]) -> None:
        self.device = device
        self.encodings = tuple(encodings)
        listed = ", ".join(self.encodings) or "no audio codec"
        super().__init__(f"{device} uses {listed}; generated audio needs PCMU, PCMA or G.722")


@dataclass(frozen=True, slots=True)
class CallPlayback:
    """A playback going to one or both sides of a call: ``playing`` per chosen leg.

    ``devices`` are the devices that hear it (in the order of ``playing``).
    """

    call_id: str
    devices: tuple[str, ...]
    playing: tuple[Playing, ...]

    def stop(self) -> None:
        """End it now on every side; the parties hear each other again."""
        for each in self.playing:
            each.stop()

    async def wait(self) -> tuple[str, ...]:
        """Why each side's playback ended (`sip_core.media.PLAY_FINISHED` when it ran out)."""
        return tuple(await asyncio.gather(*(each.done for each in self.playing)))


def _devices_of(users: Iterable[User], user: str) -> frozenset[str] | None:
    for each in users:
        if each.name == user:
            return frozenset(device.username for device in each.devices)
    return None


def _rank(call: Call) -> int:
    # Answered calls first (the one to play into), then ringing ones (to say why not).
    return 0 if call.state in (CallState.TALKING, CallState.HELD) else 1


def find_call(
    calls: Iterable[Call],
    users: Sequence[User],
    *,
    device: str | None = None,
    user: str | None = None,
) -> tuple[Call, Leg | None]:
    """The call of ``device`` (a SIP username) or ``user`` (a user's name), and their leg in it.

    The answered call comes first when there are several. The leg is None while the call rings
    (the device's branch is not the call's leg yet). Raises `UnknownParty` or `NoCallInProgress`.
    """
    if (device is None) == (user is None):
        raise ValueError("name a device or a user, not both or neither")
    if device is not None:
        if not any(d.username == device for u in users for d in u.devices):
            raise UnknownParty(f"no device {device!r}")
        mine: frozenset[str] = frozenset({device})
        name = device
    else:
        assert user is not None
        found = _devices_of(users, user)
        if found is None:
            raise UnknownParty(f"no user {user!r}")
        mine, name = found, user
    candidates: list[tuple[Call, Leg | None]] = []
    for call in calls:
        if not call.active:
            continue
        own = next((leg for leg in (call.caller, call.callee) if leg and leg.device in mine), None)
        ringing = any(leg.device in mine for leg in call.branches)
        if own is not None or ringing:
            candidates.append((call, own))
    if not candidates:
        raise NoCallInProgress(f"{name} is in no call")
    return min(candidates, key=lambda found: _rank(found[0]))


def _chosen_legs(call: Call, own: Leg | None, side: PlaySide) -> list[Leg]:
    caller, callee = call.caller, call.callee
    assert caller is not None  # answered
    assert callee is not None
    if side is PlaySide.CALLER:
        return [caller]
    if side is PlaySide.CALLEE:
        return [callee]
    if side is PlaySide.BOTH:
        return [caller, callee]
    if own is None:
        raise ValueError(f"side {side.value!r} needs the device or user whose call it is")
    if side is PlaySide.OWN:
        return [own]
    other = call.other(own)
    assert other is not None
    return [other]


def _check_codecs(leg: Leg) -> None:
    audio = leg.remote_sdp.audio() if leg.remote_sdp is not None else None
    codecs = audio.codecs() if audio is not None else []
    encodings: list[str] = []
    for codec in codecs:
        if codec.encoding.lower() in ("telephone-event", "cn"):
            continue
        encodings.append(codec.encoding)
        try:
            codec_for(codec.encoding, codec.clock_rate, codec.channels)
        except UnsupportedCodec:
            continue
        return
    raise NoGeneratedAudio(leg.device or leg.party, encodings)


def playable_legs(call: Call, own: Leg | None, side: PlaySide) -> list[Leg]:
    """The legs a playback to ``side`` goes to, once checked that it can: the call is answered
    and each leg's far end takes a codec we generate (`CallNotAnswered`, `NoGeneratedAudio`).

    ``own`` is the leg of whoever the request named (for ``own`` and ``other``). A caller that
    needs time to make the audio (text to speech) asks this first, then `play_into_call`.
    """
    if (
        call.state not in (CallState.TALKING, CallState.HELD)
        or call.media is None
        or call.caller is None
        or call.callee is None
    ):
        raise CallNotAnswered(f"call {call.id} is {call.state.value}, not answered")
    legs = _chosen_legs(call, own, side)
    for leg in legs:
        _check_codecs(leg)
    return legs


def play_into_call(
    call: Call, own: Leg | None, playback: Playback, side: PlaySide = PlaySide.BOTH
) -> CallPlayback:
    """Send ``playback`` to the chosen side(s) of an answered call (see `playable_legs`, whose
    refusals it raises before anything plays); must be called on the loop."""
    legs = playable_legs(call, own, side)
    media = call.media
    assert media is not None  # playable_legs checked it
    playing = tuple(media.leg(leg.side).play(playback) for leg in legs)
    return CallPlayback(call.id, tuple(leg.device or leg.party for leg in legs), playing)
