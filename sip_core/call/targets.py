"""Target resolution: which user and devices a dialled number means, and which registrations ring.

Why one module: every rule that decides who rings for a call -- a device's username rings that
device, a user's extension rings the user's other devices, a device already in a call is busy --
lives here, in steps that call set-up takes at different moments (the number is checked before the
INVITE's body, forwards are followed, the registrations are looked up once the INVITE is known to
be good). The rules that change who rings come from below, as data: Call Forward Always
(`sip_core.forwarding`, the forwards from `sip_core.presence`), and Do Not Disturb and Make Busy
through the ``busy`` test call control gives `ringable`. A trunk's DID is routed by
`sip_core.trunk.ingress` and arrives here as the devices it rings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip_core.config import PbxConfig, User
from sip_core.forwarding import resolve_targets
from sip_core.registrar import Binding

if TYPE_CHECKING:
    from sip_core.call.fork import ForkGroup
    from sip_core.calls import Call

__all__ = ["Destination", "RingPlan", "Targets", "destination", "forwarded", "ringable"]


@dataclass(frozen=True, slots=True)
class RingPlan:
    """How a number that is no device or user rings, as a feature decided (a ring group's pilot).

    ``name`` is shown as the called party; ``devices`` ring at once (busy ones skipped), for
    ``timeout`` seconds. ``on_ringing(call, fork)`` lets the feature add devices to the ringing
    fork later; ``on_no_answer(call)`` runs when the timer expires (or at once when none of
    ``devices`` could ring), with the fork already closed, and returns True when the feature
    took the call over (its no-answer destination), else the caller gets 480. ``available()``
    says who of the group may ring now (asked again while it rings, by features that ring a
    group for a call of their own: `sip_core.call.dial`); None: ``devices`` alone.
    """

    name: str
    devices: tuple[str, ...]
    timeout: float
    on_ringing: Callable[[Call, ForkGroup], None] | None = None
    on_no_answer: Callable[[Call], bool] | None = None
    available: Callable[[], tuple[str, ...]] | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Whom a dialled number reaches: a user, and which of their devices should ring."""

    user: User
    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Targets:
    """The registrations to ring, and how many wanted devices were skipped as busy."""

    bindings: tuple[Binding, ...]
    busy: int


def destination(config: PbxConfig, caller_device: str, dialled: str) -> Destination | None:
    """A device's username rings that device; a user's extension rings all of that user's
    devices except the caller's; anything else is no one (None: 404, or a feature code)."""
    user = config.user_for_device(dialled)
    if user is not None:
        return Destination(user, (dialled,))
    user = config.user_by_extension(dialled)
    if user is None:
        return None
    return Destination(user, tuple(d.username for d in user.devices if d.username != caller_device))


def forwarded(
    devices: Sequence[str], forwards: Callable[[str], Sequence[str] | None]
) -> tuple[str, ...]:
    """The devices that ring for ``devices`` with each Call Forward Always followed
    (``forwards(device)``: where its calls go instead, None when it takes them itself).

    Raises `sip_core.forwarding.ForwardingLoop` when forwards lead back round (482)."""
    return tuple(resolve_targets(devices, forwards))


def ringable(
    devices: Sequence[str],
    *,
    busy: Callable[[str], bool],
    bindings: Callable[[str], Sequence[Binding]],
    caller: str = "",
) -> Targets:
    """Every registration of the wanted devices that are not busy, in the devices' order.

    ``caller``'s own device never rings (a forward may lead back to it); ``busy`` says whether a
    device counts as busy (in a call, Do Not Disturb, Make Busy)."""
    skipped = 0
    found: list[Binding] = []
    for device in devices:
        if device == caller:
            continue  # forwarded back to the caller: not rung
        if busy(device):
            skipped += 1
            continue
        found.extend(bindings(device))
    return Targets(tuple(found), skipped)
