"""In-call features: which device a flip goes to, and the errors that say why it cannot.

The mechanics of a flip (ringing the target, switching the relay, hanging up the old device) are
the B2BUA's, since only it knows both legs. What lives here is the policy, kept free of SIP so that
Home Assistant's service validation and the `*0` feature code agree on the same rules:

- the device that flips must belong to a user;
- an explicit target must be another device of that same user, and registered;
- without a target, the user must have exactly one other registered device (with several, the
  caller has to say which: `*0` followed by the device's username, or the service's ``target``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sip_core.config import PbxConfig

__all__ = [
    "AmbiguousFlipTarget",
    "CallNotFlippable",
    "FlipError",
    "FlipInProgress",
    "FlipPlan",
    "NoFlipTarget",
    "NoSuchCall",
    "NotUsersDevice",
    "TargetIsCurrentDevice",
    "TargetNotRegistered",
    "UnknownDevice",
    "plan_flip",
]


class FlipError(Exception):
    """A flip cannot start; the message is written for the person who asked for it."""


class NoSuchCall(FlipError):
    """No call with that id is in progress."""


class CallNotFlippable(FlipError):
    """The call is not answered yet, is ending, or its device is not one of ours."""


class FlipInProgress(FlipError):
    """The call is already being flipped."""


class UnknownDevice(FlipError):
    """The target names no configured device."""


class NotUsersDevice(FlipError):
    """The target belongs to another user: a flip only moves a call between your own devices."""


class TargetIsCurrentDevice(FlipError):
    """The target is the device that has the call already."""


class TargetNotRegistered(FlipError):
    """The target device is configured but not registered, so it cannot ring."""


class NoFlipTarget(FlipError):
    """The user has no other registered device."""


class AmbiguousFlipTarget(FlipError):
    """The user has several other registered devices and none was named."""


@dataclass(frozen=True, slots=True)
class FlipPlan:
    """A flip that may start: move the call from ``from_device`` to ``to_device``."""

    user: str
    from_device: str
    to_device: str


def plan_flip(
    config: PbxConfig,
    current_device: str,
    target: str | None,
    is_registered: Callable[[str], bool],
) -> FlipPlan:
    """Check a flip of the call on ``current_device``; raises a `FlipError` subclass if not."""
    user = config.user_for_device(current_device)
    if user is None:
        raise CallNotFlippable(f"device {current_device} belongs to no user")
    if target is not None:
        if config.device(target) is None:
            raise UnknownDevice(f"no device is called {target!r}")
        if target == current_device:
            raise TargetIsCurrentDevice(f"the call is already on {target}")
        if all(device.username != target for device in user.devices):
            raise NotUsersDevice(f"{target} is not one of {user.name}'s devices")
        if not is_registered(target):
            raise TargetNotRegistered(f"{target} is not registered")
        return FlipPlan(user.name, current_device, target)
    candidates = _candidates(
        [d.username for d in sorted(user.devices, key=lambda d: d.priority)],
        current_device,
        is_registered,
    )
    if not candidates:
        raise NoFlipTarget(f"{user.name} has no other registered device")
    if len(candidates) > 1:
        raise AmbiguousFlipTarget(
            f"{user.name} has several registered devices ({', '.join(candidates)}): name one"
        )
    return FlipPlan(user.name, current_device, candidates[0])


def _candidates(
    devices: Sequence[str], current: str, is_registered: Callable[[str], bool]
) -> list[str]:
    return [name for name in devices if name != current and is_registered(name)]
