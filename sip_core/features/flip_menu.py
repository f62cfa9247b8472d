"""The flip menu: what ``*0`` offers a user with several devices, and how keys are read in it.

Why a rule at all: after the flip code a user may key a menu choice ("press 2 for your softphone")
or a device's own number (its short ``flip_number``, or its username when that is all digits).
Waiting after every ``*0`` to see whether a number follows would slow the common case, so:

- with one other available device (or with simultaneous ring on) the flip starts the moment the
  code is complete; nothing is waited for, and keys after it are ordinary digits for the other
  party;
- with several, the menu prompt starts at once on the device that keyed the code, and keys
  pressed during it (barge-in) or after it are read by `interpret`:

  1. ``*`` cancels;
  2. keys that are the start of a longer number of one of the user's devices wait for the rest:
     ``#`` or the inter-digit timeout ends the number;
  3. keys equal to such a number pick that device;
  4. a single key 1..N (N the menu's length) is that menu choice;
  5. anything else is read to its end (``#``, the inter-digit timeout, or 8 keys) and refused:
     as another user's device, or as no device at all. The keys never reach the other party.

  So a choice such as ``2`` is taken at once unless one of the user's device numbers starts with
  ``2`` (then ``2#`` takes it at once, or it is taken after the inter-digit timeout); ``0`` is
  never a choice; a one-digit flip number cannot exist (the configuration refuses it).

Only the user's own devices' numbers are looked for while keys are read; a complete number that
names another user's device is then refused as not theirs.

`FlipMenu` runs one menu on one leg with the injected clock; the flip (`sip_core.features.flip`)
gives it the prompt player and receives the one `Decision`.

A device's line says its type with the bundled prompts ("press 1 for your mobile") unless the
menu is given a recording of the device's label for it (a WAV file, in Home Assistant the label
spoken by a text-to-speech engine, made ahead of any call): then "press 1 for" is followed by
that recording. Recordings are only ever read, never waited for: a device without one (not made
yet, or it failed) gets its type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from sip_core.audio import PlayFile, PlaySequence
from sip_core.clock import Clock, TimerHandle
from sip_core.config import Device, DeviceType, User

__all__ = [
    "MAX_CHOICES",
    "Decision",
    "DecisionKind",
    "FlipMenu",
    "MenuEntry",
    "MenuPart",
    "device_numbers",
    "interpret",
    "label_prompt_assets",
    "menu_order",
    "menu_prompt",
]

#: Menu choices are single keys 1..9.
MAX_CHOICES: Final = 9
#: Keys after the code are read as complete at this length (a device number has at most 8).
MAX_NUMBER_LENGTH: Final = 8


class DecisionKind(StrEnum):
    WAIT = "wait"  # the keys may still become a longer device number
    DEVICE = "device"  # a device number was keyed
    CHOICE = "choice"  # a menu choice was keyed
    CANCEL = "cancel"  # "*", or nothing chosen in time
    INVALID = "invalid"  # neither a number nor a choice


@dataclass(frozen=True, slots=True)
class Decision:
    """What the keys mean: ``device`` for DEVICE and CHOICE, ``keys`` as keyed."""

    kind: DecisionKind
    keys: str = ""
    device: str = ""
    choice: int = 0


@dataclass(frozen=True, slots=True)
class MenuEntry:
    """One line of the menu: choice ``number`` flips to ``device``."""

    number: int
    device: Device


def menu_order(devices: Sequence[Device]) -> list[Device]:
    """Devices as the menu lists them (and as Home Assistant's choice picks): by priority, then
    by label (case-insensitively), then by username so the order never depends on the file."""
    return sorted(devices, key=lambda d: (d.priority, d.label.casefold(), d.username))


def device_numbers(user: User) -> dict[str, str]:
    """number -> device username, for every number the user may key after the flip code."""
    numbers: dict[str, str] = {}
    for device in user.devices:
        if device.username.isdigit():
            numbers.setdefault(device.username, device.username)
    for device in user.devices:
        if device.flip_number is not None:
            numbers.setdefault(device.flip_number, device.username)
    return numbers


type MenuPart = str | PlayFile
"""A bundled prompt's name, or a recording of a device's label."""


def menu_prompt(
    entries: Sequence[MenuEntry], labels: Mapping[str, str] | None = None
) -> tuple[MenuPart, ...]:
    """What the menu says: "press 1 for your mobile, press 2 for your soft phone ..." in bundled
    prompts, with a device's label recording (``labels``: device username -> WAV file) in place
    of "your <type>" where there is one."""
    parts: list[MenuPart] = []
    for entry in entries:
        parts += ["press", str(entry.number), "for"]
        label = labels.get(entry.device.username) if labels else None
        if label:
            parts.append(PlayFile(label))
        else:
            parts += ["your", entry.device.type.value]
    return tuple(parts)


def label_prompt_assets(wav_path: str) -> PlaySequence:
    """What a menu that speaks this label recording may play: the recording with every word of a
    menu line around it, for the media engine to convert ahead (`MediaRelay.prepare`)."""
    words = ("press", "for", "your", *(str(n) for n in range(1, MAX_CHOICES + 1)))
    types = tuple(kind.value for kind in DeviceType)
    return PlaySequence((*words, *types, PlayFile(wav_path)))


def interpret(
    keys: str, numbers: Mapping[str, str], entries: Sequence[MenuEntry], *, final: bool
) -> Decision:
    """What ``keys`` (digits keyed after the flip code, without ``#``) mean (module docstring).

    ``final``: no more keys will come (``#`` or the inter-digit timeout), so a number that could
    still grow is taken as it is.
    """
    if "*" in keys:
        return Decision(DecisionKind.CANCEL, keys)
    if not keys:
        return Decision(DecisionKind.CANCEL if final else DecisionKind.WAIT, keys)
    final = final or len(keys) >= MAX_NUMBER_LENGTH
    if not final and any(len(n) > len(keys) and n.startswith(keys) for n in numbers):
        return Decision(DecisionKind.WAIT, keys)
    device = numbers.get(keys)
    if device is not None:
        return Decision(DecisionKind.DEVICE, keys, device)
    if len(keys) == 1 and keys.isdigit():
        for entry in entries:
            if entry.number == int(keys):
                return Decision(DecisionKind.CHOICE, keys, entry.device.username, entry.number)
    if not final:
        return Decision(DecisionKind.WAIT, keys)  # some other number: refused once complete
    return Decision(DecisionKind.INVALID, keys)


class Stoppable(Protocol):
    def stop(self) -> None: ...


class FlipMenu:
    """One menu on one leg: the prompt plays at once, keys are read as `interpret` says.

    ``play(parts)`` starts the prompt (`menu_prompt` with ``labels``, the device label
    recordings) and returns something with ``stop()``; the owner calls
    `prompt_finished` when it has played out, which starts the choice timeout
    (``menu_timeout``). ``on_decided`` gets exactly one decision (never WAIT); after it, or
    after `close`, keys are ignored and no timer is left.
    """

    def __init__(
        self,
        clock: Clock,
        entries: Sequence[MenuEntry],
        numbers: Mapping[str, str],
        *,
        menu_timeout: float,
        digit_timeout: float,
        play: Callable[[tuple[MenuPart, ...]], Stoppable | None],
        on_decided: Callable[[Decision], None],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._clock = clock
        self.entries = tuple(entries)
        self._numbers = dict(numbers)
        self._menu_timeout = menu_timeout
        self._digit_timeout = digit_timeout
        self._play = play
        self._on_decided = on_decided
        self.labels = dict(labels or {})
        self._prompt: Stoppable | None = None
        self._prompting = False
        self._timer: TimerHandle | None = None
        self.keys = ""
        self.closed = False

    def start(self) -> None:
        """Start the prompt (the device hears it at once)."""
        self._prompting = True
        self._prompt = self._play(menu_prompt(self.entries, self.labels))

    def prompt_finished(self) -> None:
        """The prompt played out: the choice timeout runs from now (unless keys came)."""
        if self.closed or not self._prompting:
            return
        self._prompting = False
        self._prompt = None
        if not self.keys:
            self._restart_timer(self._menu_timeout)

    def feed(self, key: str) -> None:
        """A key from the device that keyed the flip code."""
        if self.closed:
            return
        self._stop_prompt()  # barge-in: the first key ends the prompt
        if key == "#":
            self._decide(interpret(self.keys, self._numbers, self.entries, final=True))
            return
        self.keys += key
        decision = interpret(self.keys, self._numbers, self.entries, final=False)
        if decision.kind is DecisionKind.WAIT:
            self._restart_timer(self._digit_timeout)
        else:
            self._decide(decision)

    def close(self) -> None:
        """Stop the prompt and the timer without a decision (the call or the flip ended)."""
        if self.closed:
            return
        self.closed = True
        self._stop_prompt()
        self._cancel_timer()

    def _expired(self) -> None:
        self._timer = None
        if not self.closed:
            self._decide(interpret(self.keys, self._numbers, self.entries, final=True))

    def _decide(self, decision: Decision) -> None:
        self.close()
        self._on_decided(decision)

    def _stop_prompt(self) -> None:
        prompt = self._prompt
        self._prompt = None
        self._prompting = False
        if prompt is not None:
            prompt.stop()

    def _restart_timer(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self._clock.call_later(delay, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
