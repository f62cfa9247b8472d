"""Features: what the PBX does with calls beyond connecting them (flip now; transfers next).

Features sit above call control and program against its API (`sip_core.call.control`); call
control never imports them. `sip_core.features.flip` holds the flip's rules and errors (shared by
Home Assistant's action validation and the `*0` code), `sip_core.features.codes` the feature-code
collector. The names below are re-exported so that ``from sip_core.features import FlipError``
keeps working.
"""

from __future__ import annotations

from sip_core.features.flip import (
    AmbiguousFlipTarget,
    CallNotFlippable,
    CallNotTalking,
    FlipDisabled,
    FlipError,
    FlipFailure,
    FlipInProgress,
    FlipPlan,
    NoFlipTarget,
    NoSuchCall,
    NotUsersDevice,
    TargetBusy,
    TargetIsCurrentDevice,
    TargetNotRegistered,
    TargetUnavailable,
    UnknownDevice,
    plan_flip,
)

__all__ = [
    "AmbiguousFlipTarget",
    "CallNotFlippable",
    "CallNotTalking",
    "FlipDisabled",
    "FlipError",
    "FlipFailure",
    "FlipInProgress",
    "FlipPlan",
    "NoFlipTarget",
    "NoSuchCall",
    "NotUsersDevice",
    "TargetBusy",
    "TargetIsCurrentDevice",
    "TargetNotRegistered",
    "TargetUnavailable",
    "UnknownDevice",
    "plan_flip",
]
