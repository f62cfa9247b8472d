"""Collecting digits a caller keys in answer to a prompt ("press 1 for your mobile").

A pure state machine: digits are fed in (from RFC 4733 events or SIP INFO alike, as the characters
of ``sip_core.dtmf.DIGITS``), time comes from an injected :class:`~sip_core.clock.Clock`, and the
outcome is delivered once through a callback as a :class:`CollectResult`.

Rules, as IVRs conventionally have them:

- up to ``max_digits`` digits; reaching it ends the collection at once;
- ``terminator`` (``#`` by default; None for none) ends it early and is not part of the digits;
- ``first_digit_timeout`` runs from when the prompt has finished (or from :meth:`start` if there
  is none) until the first digit; ``inter_digit_timeout`` from each digit to the next; a
  ``total_timeout`` bounds the whole collection, prompt included;
- barge-in: a digit pressed while the prompt plays stops the prompt (``on_barge_in``) and counts;
  with ``barge_in=False`` such digits are ignored instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sip_core.clock import Clock, TimerHandle

__all__ = ["CollectEnd", "CollectResult", "CollectSettings", "DigitCollector"]

_KEYS = "0123456789*#ABCD"


class CollectEnd(StrEnum):
    """Why a collection ended."""

    TERMINATOR = "terminator"
    MAX_DIGITS = "max_digits"
    TIMEOUT = "timeout"  # first-digit or inter-digit timeout
    TOTAL_TIMEOUT = "total_timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class CollectResult:
    """The digits collected (terminator excluded, possibly empty) and why collection ended."""

    digits: str
    end: CollectEnd


@dataclass(frozen=True, slots=True)
class CollectSettings:
    """How many digits to take and how long to wait; times in seconds."""

    max_digits: int = 1
    terminator: str | None = "#"
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    total_timeout: float = 30.0
    barge_in: bool = True

    def __post_init__(self) -> None:
        if self.max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        if self.terminator is not None and (
            len(self.terminator) != 1 or self.terminator not in _KEYS
        ):
            raise ValueError(f"terminator must be one keypad key, not {self.terminator!r}")
        if min(self.first_digit_timeout, self.inter_digit_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be positive")


class DigitCollector:
    """Collects one answer; make a new one for each question.

    ``on_done`` is called exactly once with the result (after which every input is ignored);
    ``on_barge_in`` is called at most once, when a digit arrives while the prompt still plays, so
    the owner can stop the prompt. Neither is called from inside :meth:`start`.
    """

    __slots__ = (
        "_clock",
        "_digit_timer",
        "_digits",
        "_on_barge_in",
        "_on_done",
        "_prompt_playing",
        "_result",
        "_started",
        "_total_timer",
        "settings",
    )

    def __init__(
        self,
        clock: Clock,
        settings: CollectSettings,
        on_done: Callable[[CollectResult], None],
        *,
        on_barge_in: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_done = on_done
        self._on_barge_in = on_barge_in
        self._digits: list[str] = []
        self._prompt_playing = False
        self._started = False
        self._result: CollectResult | None = None
        self._digit_timer: TimerHandle | None = None
        self._total_timer: TimerHandle | None = None

    @property
    def result(self) -> CollectResult | None:
        """The outcome once collection has ended, else None."""
        return self._result

    @property
    def digits(self) -> str:
        """The digits collected so far."""
        return "".join(self._digits)

    def start(self, *, prompt_playing: bool = False) -> None:
        """Start the timers; with ``prompt_playing``, call :meth:`prompt_finished` at its end."""
        if self._started:
            raise RuntimeError("a DigitCollector is started once")
        self._started = True
        self._prompt_playing = prompt_playing
        self._total_timer = self._clock.call_later(
            self.settings.total_timeout, lambda: self._finish(CollectEnd.TOTAL_TIMEOUT)
        )
        if not prompt_playing:
            self._arm(self.settings.first_digit_timeout)

    def prompt_finished(self) -> None:
        """The prompt has played to its end: the wait for the first digit begins."""
        if self._result is not None or not self._prompt_playing:
            return
        self._prompt_playing = False
        if not self._digits:
            self._arm(self.settings.first_digit_timeout)

    def digit(self, key: str) -> None:
        """One key press (a character of ``0-9 * # A-D``); others, and late ones, are ignored."""
        if not self._started or self._result is not None or len(key) != 1 or key not in _KEYS:
            return
        if self._prompt_playing:
            if not self.settings.barge_in:
                return
            self._prompt_playing = False
            if self._on_barge_in is not None:
                self._on_barge_in()
            if self._ended():  # the callback cancelled us
                return
        if key == self.settings.terminator:
            self._finish(CollectEnd.TERMINATOR)
            return
        self._digits.append(key)
        if len(self._digits) >= self.settings.max_digits:
            self._finish(CollectEnd.MAX_DIGITS)
        else:
            self._arm(self.settings.inter_digit_timeout)

    def cancel(self) -> None:
        """Give up (the call ended, say): ``on_done`` gets ``CANCELLED`` with the digits so far."""
        if self._started:
            self._finish(CollectEnd.CANCELLED)

    def _ended(self) -> bool:
        return self._result is not None

    def _arm(self, delay: float) -> None:
        if self._digit_timer is not None:
            self._digit_timer.cancel()
        self._digit_timer = self._clock.call_later(delay, lambda: self._finish(CollectEnd.TIMEOUT))

    def _finish(self, end: CollectEnd) -> None:
        if self._result is not None:
            return
        for timer in (self._digit_timer, self._total_timer):
            if timer is not None:
                timer.cancel()
        self._digit_timer = self._total_timer = None
        self._result = CollectResult(self.digits, end)
        self._on_done(self._result)
