"""DTMF: RFC 4733 payloads and de-duplication, SIP INFO bodies, and the feature-code collector."""

from __future__ import annotations

import pytest

from sip_core.clock import ManualClock
from sip_core.dtmf import (
    DtmfDecoder,
    DtmfDigit,
    DtmfError,
    InfoDigit,
    TelephoneEvent,
    build_telephone_event,
    format_dtmf_relay,
    parse_dtmf_info,
    parse_telephone_event,
)
from sip_core.features.codes import FeatureCode, FeatureCodeCollector, FeatureMatch


def test_telephone_event_fields() -> None:
    payload = bytes([11, 0x80 | 10, 0x03, 0x20])
    event = parse_telephone_event(payload)
    assert event == TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert event.digit == "#"
    assert build_telephone_event(event) == payload
    assert parse_telephone_event(bytes([16, 0, 0, 1])).digit == "!"
    assert parse_telephone_event(bytes([70, 0, 0, 1])).digit is None  # a tone, not a key
    with pytest.raises(DtmfError):
        parse_telephone_event(b"\x01\x02")


def _press(event: int, timestamp: int, durations: list[int], end_repeats: int = 3) -> list[bytes]:
    """The packets of one key press as a phone sends them: updates, then the end three times."""
    packets = [build_telephone_event(TelephoneEvent(event, False, 10, d)) for d in durations]
    final = build_telephone_event(TelephoneEvent(event, True, 10, durations[-1] + 160))
    return packets + [final] * end_repeats


def test_decoder_reports_each_press_once() -> None:
    decoder = DtmfDecoder()
    found: list[DtmfDigit] = []
    for event, timestamp in ((1, 1000), (1, 3000), (5, 5000)):
        for payload in _press(event, timestamp, [160, 320, 480]):
            digit = decoder.feed(payload, timestamp)
            if digit is not None:
                found.append(digit)
    assert [(d.digit, d.timestamp) for d in found] == [("1", 1000), ("1", 3000), ("5", 5000)]
    assert found[0].duration == 160
    assert found[0].volume == 10


def test_decoder_catches_a_press_whose_start_was_lost() -> None:
    decoder = DtmfDecoder()
    only_end = build_telephone_event(TelephoneEvent(9, True, 10, 800))
    digit = decoder.feed(only_end, 7000)
    assert digit is not None
    assert (digit.digit, digit.end) == ("9", True)
    assert decoder.feed(only_end, 7000) is None


def test_decoder_ignores_late_repeats_and_long_press_segments() -> None:
    decoder = DtmfDecoder()
    assert decoder.feed(build_telephone_event(TelephoneEvent(2, False, 0, 160)), 100) is not None
    assert decoder.feed(build_telephone_event(TelephoneEvent(3, False, 0, 160)), 900) is not None
    # a delayed end packet of the first press
    assert decoder.feed(build_telephone_event(TelephoneEvent(2, True, 0, 480)), 100) is None
    # a long press: the duration overflowed, the next segment starts where the last one ended
    assert decoder.feed(build_telephone_event(TelephoneEvent(4, False, 0, 65535)), 2000) is not None
    assert decoder.feed(build_telephone_event(TelephoneEvent(4, False, 0, 100)), 67535) is None
    assert decoder.feed(b"\x01", 5000) is None  # junk
    decoder.reset()
    assert decoder.feed(build_telephone_event(TelephoneEvent(2, False, 0, 160)), 100) is not None


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", InfoDigit("5", 160)),
        ("application/dtmf-relay", "signal= *\nduration = 250", InfoDigit("*", 250)),
        ("Application/DTMF-Relay; charset=x", b"Signal=#\r\n", InfoDigit("#", None)),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=100", InfoDigit("#", 100)),
        ("application/dtmf-relay", b"Signal=a\r\nExtra=1\r\n", InfoDigit("A", None)),
        ("application/dtmf", b"7", InfoDigit("7", None)),
        ("application/dtmf", b"10\r\n", InfoDigit("*", None)),
    ],
)
def test_sip_info_bodies(content_type: str, body: bytes | str, expected: InfoDigit) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/dtmf-relay", b"Duration=160\r\n", "no Signal"),
        ("application/dtmf-relay", b"Signal=X\r\n", "not a DTMF signal"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=long\r\n", "duration"),
        ("application/dtmf-relay", b"Signal 5\r\n", "without '='"),
        ("application/dtmf-relay", b"Signal=\xff", "UTF-8"),
        ("application/dtmf", b"99", "not a DTMF signal"),
        ("text/plain", b"5", "content type"),
    ],
)
def test_bad_sip_info_bodies(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(DtmfError, match=message):
        parse_dtmf_info(content_type, body)


def test_format_dtmf_relay() -> None:
    body = format_dtmf_relay("5", 160)
    assert body == b"Signal=5\r\nDuration=160\r\n"
    assert parse_dtmf_info("application/dtmf-relay", body) == InfoDigit("5", 160)
    with pytest.raises(DtmfError):
        format_dtmf_relay("x")


class Recorder:
    """The collector's two outputs, in one ordered log."""

    def __init__(self) -> None:
        self.log: list[FeatureMatch | str] = []

    def match(self, match: FeatureMatch) -> None:
        self.log.append(match)

    def passthrough(self, digit: str) -> None:
        self.log.append(digit)


def _collector(
    codes: tuple[FeatureCode, ...] | None = None, timeout: float = 2.0
) -> tuple[FeatureCodeCollector, ManualClock, Recorder]:
    clock = ManualClock()
    recorder = Recorder()
    if codes is None:
        collector = FeatureCodeCollector(
            clock, recorder.match, recorder.passthrough, inter_digit_timeout=timeout
        )
    else:
        collector = FeatureCodeCollector(
            clock, recorder.match, recorder.passthrough, codes, inter_digit_timeout=timeout
        )
    return collector, clock, recorder


def _feed(collector: FeatureCodeCollector, digits: str) -> None:
    for digit in digits:
        collector.feed(digit)


FLIP = "flip"


def test_default_flip_waits_for_a_device_number_then_times_out() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "*0")
    assert recorder.log == []
    assert collector.pending == "*0"
    clock.advance(1.9)
    assert recorder.log == []
    clock.advance(0.2)
    assert recorder.log == [FeatureMatch(FLIP, "*0", "")]
    assert collector.pending == ""
    assert clock.pending == 0


def test_flip_with_device_number_and_inter_digit_timer_restarts() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "*0")
    clock.advance(1.5)
    collector.feed("1")
    clock.advance(1.5)
    collector.feed("2")
    clock.advance(1.9)
    assert recorder.log == []
    clock.advance(0.1)
    assert recorder.log == [FeatureMatch(FLIP, "*0", "12")]


def test_hash_ends_the_device_number_at_once() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "*03#")
    assert recorder.log == [FeatureMatch(FLIP, "*0", "3")]
    _feed(collector, "*0#")
    assert recorder.log[-1] == FeatureMatch(FLIP, "*0", "")
    assert clock.pending == 0


def test_digits_that_are_no_code_pass_through_in_order() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "12")
    assert recorder.log == ["1", "2"]
    collector.feed("*")
    assert recorder.log == ["1", "2"]  # held: could be the start of *0
    collector.feed("5")
    assert recorder.log == ["1", "2", "*", "5"]  # the prefix failed: both go on, in order
    collector.feed("*")
    clock.advance(5)
    assert recorder.log == ["1", "2", "*", "5", "*"]  # a lone * times out and passes through


def test_a_failed_prefix_restarts_on_the_next_digit() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "**0")
    assert recorder.log == ["*"]
    assert collector.pending == "*0"
    clock.advance(2)
    assert recorder.log == ["*", FeatureMatch(FLIP, "*0", "")]


def test_a_complete_code_then_a_non_argument_digit() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "*0*")
    assert recorder.log == [FeatureMatch(FLIP, "*0", "")]
    assert collector.pending == "*"
    collector.feed("7")
    assert recorder.log == [FeatureMatch(FLIP, "*0", ""), "*", "7"]
    assert clock.pending == 0


CODES = (
    FeatureCode("*0", "flip"),
    FeatureCode("*01", "flip-kitchen"),
    FeatureCode("*9", "park"),
    FeatureCode("*8", "pickup", argument=True, max_argument_digits=2),
)


def test_codes_that_prefix_each_other() -> None:
    collector, clock, recorder = _collector(CODES)
    _feed(collector, "*01")
    assert recorder.log == [FeatureMatch("flip-kitchen", "*01")]  # nothing longer: at once
    _feed(collector, "*0")
    assert recorder.log[-1:] == [FeatureMatch("flip-kitchen", "*01")]  # *0 waits for *01
    clock.advance(2)
    assert recorder.log[-1] == FeatureMatch("flip", "*0")
    _feed(collector, "*05")
    assert recorder.log[-2:] == [FeatureMatch("flip", "*0"), "5"]


def test_exact_code_without_extensions_fires_at_once() -> None:
    collector, clock, recorder = _collector(CODES)
    _feed(collector, "*9")
    assert recorder.log == [FeatureMatch("park", "*9")]
    assert clock.pending == 0


def test_argument_length_limit() -> None:
    collector, clock, recorder = _collector(CODES)
    _feed(collector, "*812")
    assert recorder.log == [FeatureMatch("pickup", "*8", "12")]
    _feed(collector, "*8")
    clock.advance(2)
    assert recorder.log[-1] == FeatureMatch("pickup", "*8", "")
    assert clock.pending == 0


def test_close_forgets_held_digits() -> None:
    collector, clock, recorder = _collector()
    _feed(collector, "*0")
    collector.close()
    assert clock.pending == 0
    clock.advance(10)
    assert recorder.log == []
    with pytest.raises(DtmfError):
        collector.feed("x")


def test_feature_code_validation() -> None:
    with pytest.raises(ValueError, match="DTMF digits"):
        FeatureCode("*x", "bad")
    with pytest.raises(ValueError, match="DTMF digits"):
        FeatureCode("", "bad")
