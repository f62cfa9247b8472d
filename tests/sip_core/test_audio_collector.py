"""The digit collector on a ManualClock: every way a collection can end, and barge-in."""

from __future__ import annotations

import pytest

from sip_core.audio import CollectEnd, CollectResult, CollectSettings, DigitCollector
from sip_core.clock import ManualClock


class Run:
    """A collector with its clock, recording what it reports."""

    def __init__(self, settings: CollectSettings, *, prompt: bool = False) -> None:
        self.clock = ManualClock()
        self.results: list[CollectResult] = []
        self.barge_ins = 0
        self.collector = DigitCollector(
            self.clock, settings, self.results.append, on_barge_in=self._barge_in
        )
        self.collector.start(prompt_playing=prompt)

    def _barge_in(self) -> None:
        self.barge_ins += 1

    def keys(self, text: str) -> None:
        for key in text:
            self.collector.digit(key)

    @property
    def result(self) -> CollectResult:
        assert len(self.results) == 1
        assert self.collector.result == self.results[0]
        assert self.clock.pending == 0  # no timer left behind
        return self.results[0]


def test_max_digits_ends_at_once() -> None:
    run = Run(CollectSettings(max_digits=3))
    run.keys("12")
    assert run.results == []
    assert run.collector.digits == "12"
    run.keys("3")
    assert run.result == CollectResult("123", CollectEnd.MAX_DIGITS)
    run.keys("4")  # late digits change nothing
    run.clock.advance(60)
    assert run.result == CollectResult("123", CollectEnd.MAX_DIGITS)


def test_the_terminator_ends_and_is_not_a_digit() -> None:
    run = Run(CollectSettings(max_digits=4, terminator="#"))
    run.keys("42#")
    assert run.result == CollectResult("42", CollectEnd.TERMINATOR)


def test_the_terminator_alone_gives_no_digits() -> None:
    run = Run(CollectSettings(max_digits=4, terminator="*"))
    run.keys("*")
    assert run.result == CollectResult("", CollectEnd.TERMINATOR)


def test_without_a_terminator_hash_is_a_digit() -> None:
    run = Run(CollectSettings(max_digits=2, terminator=None))
    run.keys("#1")
    assert run.result == CollectResult("#1", CollectEnd.MAX_DIGITS)


def test_inter_digit_timeout_runs_from_each_digit() -> None:
    run = Run(CollectSettings(max_digits=5, first_digit_timeout=5, inter_digit_timeout=2))
    run.clock.advance(4.9)
    run.keys("7")
    run.clock.advance(1.9)
    run.keys("8")
    run.clock.advance(1.9)
    assert run.results == []
    run.clock.advance(0.2)
    assert run.result == CollectResult("78", CollectEnd.TIMEOUT)


def test_no_digit_at_all_times_out_empty() -> None:
    run = Run(CollectSettings(first_digit_timeout=5))
    run.clock.advance(4.99)
    assert run.results == []
    run.clock.advance(0.02)
    assert run.result == CollectResult("", CollectEnd.TIMEOUT)


def test_the_first_digit_wait_starts_when_the_prompt_ends() -> None:
    run = Run(CollectSettings(first_digit_timeout=3, total_timeout=60), prompt=True)
    run.clock.advance(10)  # a long prompt: no timeout while it plays
    assert run.results == []
    run.collector.prompt_finished()
    run.clock.advance(2.9)
    assert run.results == []
    run.clock.advance(0.2)
    assert run.result == CollectResult("", CollectEnd.TIMEOUT)


def test_the_total_timeout_bounds_everything() -> None:
    settings = CollectSettings(
        max_digits=10, first_digit_timeout=5, inter_digit_timeout=4, total_timeout=9
    )
    run = Run(settings)
    for _ in range(3):
        run.clock.advance(2.5)
        run.keys("1")
    assert run.results == []  # the next inter-digit timeout would be at 11.5 s
    run.clock.advance(1.4)
    assert run.results == []
    run.clock.advance(0.2)
    assert run.result == CollectResult("111", CollectEnd.TOTAL_TIMEOUT)


def test_barge_in_stops_the_prompt_and_the_digit_counts() -> None:
    run = Run(CollectSettings(max_digits=2, inter_digit_timeout=3), prompt=True)
    run.clock.advance(1)
    run.keys("5")
    assert run.barge_ins == 1
    run.collector.prompt_finished()  # the engine reports the stopped prompt: nothing changes
    run.keys("6")
    assert run.barge_ins == 1
    assert run.result == CollectResult("56", CollectEnd.MAX_DIGITS)


def test_barge_in_can_be_switched_off() -> None:
    run = Run(CollectSettings(max_digits=1, barge_in=False), prompt=True)
    run.keys("9")
    assert run.barge_ins == 0
    assert run.collector.digits == ""
    run.collector.prompt_finished()
    run.keys("3")
    assert run.result == CollectResult("3", CollectEnd.MAX_DIGITS)


def test_a_barge_in_that_cancels_ends_the_collection_as_cancelled() -> None:
    clock = ManualClock()
    results: list[CollectResult] = []
    collector: DigitCollector

    def cancel_on_barge_in() -> None:
        collector.cancel()

    collector = DigitCollector(
        clock, CollectSettings(max_digits=1), results.append, on_barge_in=cancel_on_barge_in
    )
    collector.start(prompt_playing=True)
    collector.digit("1")
    assert results == [CollectResult("", CollectEnd.CANCELLED)]
    assert clock.pending == 0


def test_cancel_reports_the_digits_so_far_once() -> None:
    run = Run(CollectSettings(max_digits=4))
    run.keys("12")
    run.collector.cancel()
    run.collector.cancel()
    assert run.result == CollectResult("12", CollectEnd.CANCELLED)


def test_keys_that_are_not_keypad_keys_are_ignored() -> None:
    run = Run(CollectSettings(max_digits=3))
    for key in ("", "12", "x", "!", " "):
        run.collector.digit(key)
    assert run.collector.digits == ""
    run.keys("A*0")
    assert run.result == CollectResult("A*0", CollectEnd.MAX_DIGITS)


def test_digits_before_start_are_ignored_and_start_is_once() -> None:
    clock = ManualClock()
    results: list[CollectResult] = []
    collector = DigitCollector(clock, CollectSettings(), results.append)
    collector.digit("1")
    collector.start()
    assert collector.digits == ""
    with pytest.raises(RuntimeError):
        collector.start()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_digits": 0}, "max_digits"),
        ({"terminator": "##"}, "terminator"),
        ({"terminator": "x"}, "terminator"),
        ({"inter_digit_timeout": 0}, "positive"),
        ({"total_timeout": -1}, "positive"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CollectSettings(**kwargs)  # type: ignore[arg-type]
