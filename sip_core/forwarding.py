"""Resolving who a call rings, with forwarding loops cut before anything rings.

A call to a number becomes a set of devices; a device (or user) that forwards its calls replaces
itself with the forward's targets, which may forward again. Two forwards pointing at each other
would otherwise ring forever (a B2BUA makes a new call for each hop, so Max-Forwards is the only
other brake, and it allows 70 hops). `resolve_targets` follows the forwards depth first and keeps
the chain that led to each device: a device that is already in its own chain is a loop, refused
with `ForwardingLoop`, whose message names the whole chain so the log says which forwards to fix.

Forwarding itself is a feature of its own; until it exists the B2BUA resolves with `no_forwards`,
and every future forward goes through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ForwardChain", "ForwardingLoop", "no_forwards", "resolve_targets"]

#: How many forwarding hops one resolution follows at most, loop or not.
MAX_FORWARD_HOPS = 16


class ForwardingLoop(Exception):
    """Forwards that lead back to a device already in the chain (or too long a chain)."""

    def __init__(self, chain: Sequence[str], reason: str) -> None:
        super().__init__(f"{reason}: {' -> '.join(chain)}")
        self.chain = tuple(chain)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ForwardChain:
    """The devices a call has passed through on its way to one target, first one first."""

    devices: tuple[str, ...] = ()

    def extend(self, device: str) -> ForwardChain:
        """The chain one hop further; `ForwardingLoop` if ``device`` is already in it."""
        if device in self.devices:
            raise ForwardingLoop((*self.devices, device), "forwarding loop")
        if len(self.devices) > MAX_FORWARD_HOPS:
            raise ForwardingLoop((*self.devices, device), "forwarding chain too long")
        return ForwardChain((*self.devices, device))


def no_forwards(_device: str) -> Sequence[str] | None:
    """The forwarding rule while no device forwards: none does."""
    return None


def resolve_targets(
    devices: Iterable[str],
    forwards: Callable[[str], Sequence[str] | None] = no_forwards,
    chain: ForwardChain = ForwardChain(),
) -> list[str]:
    """The devices to ring for ``devices``, each forward followed (``forwards(device)``: where
    that device's calls go instead, or None when it takes them itself).

    Order is kept and duplicates (two forwards to the same phone) ring once. ``chain`` is where the
    call has been already (a forwarded call that is resolved again).
    """
    found: list[str] = []
    for device in devices:
        _follow(device, forwards, chain, found)
    return found


def _follow(
    device: str,
    forwards: Callable[[str], Sequence[str] | None],
    chain: ForwardChain,
    found: list[str],
) -> None:
    here = chain.extend(device)
    targets = forwards(device)
    if targets is None:
        if device not in found:
            found.append(device)
        return
    for target in targets:
        _follow(target, forwards, here, found)
