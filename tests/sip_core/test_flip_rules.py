"""The flip's rules (issue: Call Flip complete): the menu, direct numbers, refusals, failback and
the per-user settings, driven through the B2BUA harness on a ManualClock.

What a device hears is checked at the API: `CallControl.play` is replaced by a recorder, so each
test sees which leg was sent which prompt or tone (the interop tests check the audio itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest

from sip_core.audio import PlayPrompts, PlayTone, Tone
from sip_core.audio.playback import Playback
from sip_core.calls import CallState, Leg
from sip_core.clock import ManualClock
from sip_core.config import (
    ConfigError,
    Device,
    DeviceType,
    PbxConfig,
    User,
    UserFlipOptions,
    config_from_mapping,
)
from sip_core.events import HandoffFailed, HandoffStarted, HandoffSucceeded
from sip_core.features.flip import FlipFailure, FlipWay, TargetUnavailable
from sip_core.features.flip_menu import (
    Decision,
    DecisionKind,
    FlipMenu,
    MenuEntry,
    device_numbers,
    interpret,
    menu_order,
    menu_prompt,
)

from .test_b2bua_harness import PASSWORD, Harness, Phone, sdp, settle

# -- the key rule, pure ------------------------------------------------------------------------


def _device(name: str, label: str, kind: DeviceType, priority: int = 0, number: str | None = None):  # type: ignore[no-untyped-def]
    return Device(name, PASSWORD, label, kind, priority, flip_number=number)


DESK = _device("201", "Desk", DeviceType.DESK)
MOBILE = _device("202", "Mobile", DeviceType.MOBILE)
SOFT = _device("203", "Soft", DeviceType.SOFTPHONE, number="55")
ALICE = User("Alice", "200", (DESK, MOBILE, SOFT))
ENTRIES = [MenuEntry(1, MOBILE), MenuEntry(2, SOFT), MenuEntry(3, DESK)]
NUMBERS = device_numbers(ALICE)


@pytest.mark.parametrize(
    ("keys", "final", "expected"),
    [
        ("1", False, Decision(DecisionKind.CHOICE, "1", "202", 1)),  # no number starts with 1
        ("2", False, Decision(DecisionKind.WAIT, "2")),  # 201, 202, 203 start with 2
        ("2", True, Decision(DecisionKind.CHOICE, "2", "203", 2)),  # "2#" or the timeout
        ("20", False, Decision(DecisionKind.WAIT, "20")),
        ("202", False, Decision(DecisionKind.DEVICE, "202", "202")),
        ("20", True, Decision(DecisionKind.INVALID, "20")),
        ("5", False, Decision(DecisionKind.WAIT, "5")),  # the start of flip number 55
        ("5", True, Decision(DecisionKind.INVALID, "5")),  # not a choice: only 3 entries
        ("55", False, Decision(DecisionKind.DEVICE, "55", "203")),
        ("4", False, Decision(DecisionKind.WAIT, "4")),  # not a choice: read to its end
        ("4", True, Decision(DecisionKind.INVALID, "4")),
        ("0", True, Decision(DecisionKind.INVALID, "0")),  # 0 is never a choice
        ("*", False, Decision(DecisionKind.CANCEL, "*")),
        ("", True, Decision(DecisionKind.CANCEL, "")),  # nothing chosen in time
        ("301", False, Decision(DecisionKind.WAIT, "301")),
        ("301", True, Decision(DecisionKind.INVALID, "301")),  # not Alice's: refused
        ("12345678", False, Decision(DecisionKind.INVALID, "12345678")),  # as long as any
    ],
)
def test_keys_after_the_code_are_read_by_the_rule(
    keys: str, final: bool, expected: Decision
) -> None:
    assert interpret(keys, NUMBERS, ENTRIES, final=final) == expected


def test_menu_order_is_priority_then_label() -> None:
    devices = [
        _device("1", "zeta", DeviceType.DESK, 1),
        _device("2", "Beta", DeviceType.DESK, 0),
        _device("3", "alpha", DeviceType.DESK, 1),
    ]
    assert [d.username for d in menu_order(devices)] == ["2", "3", "1"]


def test_the_prompt_names_each_choice_and_device_type() -> None:
    assert menu_prompt(ENTRIES[:2]) == (
        *("press", "1", "for", "your", "mobile"),
        *("press", "2", "for", "your", "softphone"),
    )


@dataclass
class FakePrompt:
    names: tuple[str, ...]
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True


@dataclass
class MenuRun:
    clock: ManualClock = field(default_factory=ManualClock)
    prompts: list[FakePrompt] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    menu: FlipMenu | None = None

    def start(self) -> FlipMenu:
        def play(names: tuple[str, ...]) -> FakePrompt:
            self.prompts.append(FakePrompt(names))
            return self.prompts[-1]

        self.menu = FlipMenu(
            self.clock,
            ENTRIES,
            NUMBERS,
            menu_timeout=8,
            digit_timeout=3,
            play=play,
            on_decided=self.decisions.append,
        )
        self.menu.start()
        return self.menu


def test_the_prompt_starts_at_once_and_a_key_barges_in() -> None:
    run = MenuRun()
    menu = run.start()
    assert [p.names[:2] for p in run.prompts] == [("press", "1")]
    menu.feed("1")
    assert run.prompts[0].stopped
    assert run.decisions == [Decision(DecisionKind.CHOICE, "1", "202", 1)]
    menu.feed("2")  # after the decision keys are ignored
    assert len(run.decisions) == 1


def test_no_choice_within_the_menu_timeout_cancels() -> None:
    run = MenuRun()
    menu = run.start()
    run.clock.advance(60)  # the prompt still plays: no timeout runs yet
    assert run.decisions == []
    menu.prompt_finished()
    run.clock.advance(7.9)
    assert run.decisions == []
    run.clock.advance(0.2)
    assert run.decisions == [Decision(DecisionKind.CANCEL, "")]


def test_a_choice_that_starts_a_device_number_waits_for_hash_or_the_digit_timeout() -> None:
    run = MenuRun()
    menu = run.start()
    menu.feed("2")
    run.clock.advance(2.9)
    assert run.decisions == []
    run.clock.advance(0.2)
    assert run.decisions == [Decision(DecisionKind.CHOICE, "2", "203", 2)]

    run = MenuRun()
    menu = run.start()
    menu.feed("2")
    menu.feed("#")
    assert run.decisions == [Decision(DecisionKind.CHOICE, "2", "203", 2)]

    run = MenuRun()
    menu = run.start()
    for key in "202":
        menu.feed(key)
    assert run.decisions == [Decision(DecisionKind.DEVICE, "202", "202")]


# -- configuration -----------------------------------------------------------------------------


def _config(devices: list[dict[str, object]], **user: object) -> PbxConfig:
    return config_from_mapping(
        {"users": [{"name": "alice", "extension": "200", "devices": devices, **user}]}
    )


def test_flip_numbers_and_options_load_and_round_trip() -> None:
    config = _config(
        [
            {"username": "201", "password": PASSWORD},
            {"username": "alice-mobile", "password": PASSWORD, "flip_number": 22},
        ],
        flip_options={"timeout": 12, "auto_hangup": False, "simultaneous_ring": True},
    )
    (alice,) = config.users
    assert alice.devices[1].flip_number == "22"
    assert alice.flip_options == UserFlipOptions(12, False, False, True)
    assert config_from_mapping(config.to_mapping()) == config
    assert device_numbers(alice) == {"201": "201", "22": "alice-mobile"}
    assert _config([{"username": "201", "password": PASSWORD}]).users[0].flip_options == (
        UserFlipOptions()
    )


@pytest.mark.parametrize(
    ("devices", "options", "message"),
    [
        (
            [{"username": "201", "password": PASSWORD, "flip_number": "7"}],
            None,
            "users[0].devices[0].flip_number: must be 2 to 8 digits",
        ),
        (
            [{"username": "201", "password": PASSWORD, "flip_number": "1*"}],
            None,
            "users[0].devices[0].flip_number: must be 2 to 8 digits",
        ),
        (
            [
                {"username": "201", "password": PASSWORD},
                {"username": "202", "password": PASSWORD, "flip_number": "201"},
            ],
            None,
            "users[0].devices[1].flip_number: '201' is already the number of devices[0]",
        ),
        (
            [{"username": "201", "password": PASSWORD}],
            {"auto_hangup": "yes"},
            "users[0].flip_options.auto_hangup: must be true or false",
        ),
        (
            [{"username": "201", "password": PASSWORD}],
            {"timeout": 0},
            "users[0].flip_options.timeout: must be between 1 and 3600",
        ),
        (
            [{"username": "201", "password": PASSWORD}],
            {"ring_all": True},
            "users[0].flip_options.ring_all: unknown key",
        ),
    ],
)
def test_bad_flip_settings_are_refused_with_the_field(
    devices: list[dict[str, object]], options: dict[str, object] | None, message: str
) -> None:
    extra = {} if options is None else {"flip_options": options}
    with pytest.raises(ConfigError) as caught:
        _config(devices, **extra)
    assert str(caught.value).startswith(message)


# -- the feature through the B2BUA -------------------------------------------------------------


@dataclass
class Played:
    device: str | None
    play: Playback
    done: asyncio.Future[str]
    stopped: bool = False

    def stop(self) -> None:
        self.stopped = True
        if not self.done.done():
            self.done.set_result("stopped")


class Harness3(Harness):
    """Alice with a desk (201), a mobile (202) and a softphone (203); prompts recorded."""

    def __init__(self, options: UserFlipOptions | None = None) -> None:
        super().__init__()
        alice = User(
            "Alice",
            "200",
            (
                _device("201", "Desk", DeviceType.DESK),
                _device("202", "Mobile", DeviceType.MOBILE),
                _device("203", "Soft", DeviceType.SOFTPHONE, number="33"),
            ),
            flip_options=options or UserFlipOptions(),
        )
        self.config = replace(self.config, users=(alice, *self.config.users[1:]))
        self.played: list[Played] = []

        def play(leg: Leg, what: Playback) -> Played:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.played.append(Played(leg.device, what, done))
            return self.played[-1]

        self.b2bua.play = play  # type: ignore[method-assign,assignment]

    def heard(self, device: str) -> list[Playback]:
        return [p.play for p in self.played if p.device == device]


def harness3(options: UserFlipOptions | None = None) -> Iterator[Harness3]:
    harness = Harness3(options)
    yield harness
    harness.close()


@pytest.fixture
def h() -> Iterator[Harness3]:
    yield from harness3()


@pytest.fixture
def h_ring_all() -> Iterator[Harness3]:
    yield from harness3(UserFlipOptions(simultaneous_ring=True))


@pytest.fixture
def h_keep() -> Iterator[Harness3]:
    yield from harness3(UserFlipOptions(timeout=5, auto_hangup=False, announcement=True))


async def talking(h: Harness) -> tuple[Phone, Phone, Phone, Phone]:
    """Carol (401) calls Alice's desk (201) directly; the mobile and softphone are free."""
    carol = h.phone("401", 5401)
    desk = h.phone("201", 5201)
    mobile = h.phone("202", 5202)
    soft = h.phone("203", 5203)
    invite = carol.invite("201")
    await settle()
    desk.answer(desk.last_request("INVITE"), 200, sdp(6201))
    carol.confirm(invite, carol.responses(200)[-1])
    for phone in (mobile, soft):
        phone.seen = len(phone.inbox())
    return carol, desk, mobile, soft


def key(phone: Phone, keys: str) -> None:
    for digit in keys:
        phone.request(
            "INFO", body=f"Signal={digit}\r\n".encode(), content_type="application/dtmf-relay"
        )


def invites(phone: Phone) -> list:  # type: ignore[type-arg]
    return [m for m in phone.new() if getattr(m, "method", None) == "INVITE"]


async def test_several_devices_get_the_menu_at_once_and_a_choice_flips(h: Harness3) -> None:
    carol, desk, mobile, soft = await talking(h)
    key(desk, "*0")
    # no ringing yet, the menu plays to the desk at once, nothing to Carol
    assert invites(mobile) == invites(soft) == []
    assert h.heard("201") == [
        PlayPrompts(
            (
                *("press", "1", "for", "your", "mobile"),
                *("press", "2", "for", "your", "softphone"),
            )
        )
    ]
    assert h.heard("401") == []
    key(desk, "2")  # barge-in: the second listed device, the softphone ...
    assert h.played[0].stopped
    assert invites(soft) == []  # ... but 201-203 start with 2: wait for more keys
    h.clock.advance(3)  # the inter-digit timeout: "2" is the choice
    (ringing,) = invites(soft)
    assert invites(mobile) == []
    assert '"Carol"' in (ringing.headers.get("From") or "")  # caller ID: the other party
    soft.answer(ringing, 200, sdp(6203))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "203"
    (record,) = call.handoffs
    assert (record.succeeded, record.pressed_by, record.keys, record.how) == (
        True,
        "201",
        "*0 2",
        FlipWay.MENU,
    )
    assert carol.requests("INFO") == []  # no key of the menu reached Carol


async def test_a_device_number_during_the_menu_flips_directly(h: Harness3) -> None:
    _, desk, mobile, soft = await talking(h)
    key(desk, "*033")  # the softphone's flip number
    (ringing,) = invites(soft)
    assert invites(mobile) == []
    assert h.only_call().operation is not None
    soft.answer(ringing, 486)
    await settle()
    (failed,) = h.events_of(HandoffFailed)
    assert (failed.record.how, failed.record.keys, failed.record.code) == (
        FlipWay.DIRECT,
        "*0 33",
        FlipFailure.BUSY,
    )


async def test_the_username_waits_for_its_last_digit_and_hash_takes_a_choice(
    h: Harness3,
) -> None:
    _, desk, mobile, soft = await talking(h)
    key(desk, "*020")
    assert invites(mobile) == invites(soft) == []  # "20" may become 202 or 203
    key(desk, "3")
    (ringing,) = invites(soft)
    soft.answer(ringing, 603)
    await settle()
    key(desk, "*02#")  # 2 then '#': the menu's second choice, no waiting
    (ringing,) = invites(soft)
    assert ringing.to.uri.user == "203"


async def test_star_or_no_choice_cancels_and_the_call_goes_on(h: Harness3) -> None:
    carol, desk, mobile, soft = await talking(h)
    key(desk, "*0*")
    assert h.heard("201")[-1] == PlayPrompts(("flip_cancelled",))
    (failed,) = h.events_of(HandoffFailed)
    assert failed.record.code == FlipFailure.CANCELLED
    call = h.only_call()
    assert call.operation is None
    assert call.state is CallState.TALKING
    key(desk, "*0")
    h.played[-1].done.set_result("finished")  # the prompt played out
    await settle()
    h.clock.advance(8.1)
    assert h.heard("201")[-1] == PlayPrompts(("flip_cancelled",))
    assert [e.record.code for e in h.events_of(HandoffFailed)] == ["cancelled", "cancelled"]
    assert invites(mobile) == invites(soft) == []
    assert carol.requests() == []
    assert desk.requests("BYE") == []


async def test_another_users_device_number_is_refused(h: Harness3) -> None:
    _, desk, _mobile, _soft = await talking(h)
    key(desk, "*0301#")
    assert h.heard("201")[-1] == PlayPrompts(("not_available", "flip_cancelled"))
    (failed,) = h.events_of(HandoffFailed)
    assert (failed.record.code, failed.to_device) == (FlipFailure.NOT_OWN_DEVICE, "301")


async def test_simultaneous_ring_rings_every_device_first_answer_wins(
    h_ring_all: Harness3,
) -> None:
    h = h_ring_all
    _, desk, mobile, soft = await talking(h)
    key(desk, "*0")
    (to_mobile,) = invites(mobile)
    (to_soft,) = invites(soft)
    mobile.answer(to_mobile, 180)
    assert h.heard("201") == []  # no menu
    (started,) = h.events_of(HandoffStarted)
    assert started.to_device == "202, 203"
    soft.answer(to_soft, 200, sdp(6203))
    await settle()
    assert mobile.requests("CANCEL")[-1].call_id == to_mobile.call_id
    (done,) = h.events_of(HandoffSucceeded)
    assert (done.to_device, done.record.how) == ("203", FlipWay.SIMULTANEOUS)
    assert len(desk.requests("BYE")) == 1


async def test_the_action_without_target_uses_simultaneous_ring_when_on(
    h_ring_all: Harness3,
) -> None:
    h = h_ring_all
    _, _desk, mobile, soft = await talking(h)
    h.b2bua.flip(h.only_call().id)
    assert len(invites(mobile)) == len(invites(soft)) == 1


async def test_refusals_play_the_error_tone_and_fire_a_failed_handoff(h: Harness3) -> None:
    carol, desk, mobile, soft = await talking(h)
    presence = h.b2bua.presence  # the runtime settings: flip permission, Do Not Disturb
    presence.set_user_flip("Alice", False)
    key(desk, "*0")
    assert h.heard("201") == [PlayTone(Tone.ERROR)]
    presence.set_user_flip("Alice", True)
    # Do Not Disturb on both: nothing to offer
    presence.set_dnd("202", True)
    presence.set_dnd("203", True)
    key(desk, "*0")
    presence.set_dnd("202", False)
    with pytest.raises(TargetUnavailable, match="do not disturb"):
        h.b2bua.flip(h.only_call().id, "203")
    presence.set_dnd("203", False)
    codes = [
        (e.record.code, e.record.pressed_by, e.record.keys, e.record.how)
        for e in h.events_of(HandoffFailed)
    ]
    assert codes == [
        (FlipFailure.DISABLED, "201", "*0", ""),
        (FlipFailure.TARGET_UNAVAILABLE, "201", "*0", ""),
        (FlipFailure.TARGET_UNAVAILABLE, "", "", FlipWay.ACTION),  # the action's refusal
    ]
    assert h.heard("201") == [PlayTone(Tone.ERROR)] * 2
    # a held call (Carol put Alice on hold) is refused too
    carol.request("INVITE", body=sdp(6401, direction="sendonly"))
    desk_reinvite = desk.last_request("INVITE")
    desk.reply(desk_reinvite, 200, sdp(6201, direction="recvonly"))
    await settle()
    assert h.only_call().state is CallState.HELD
    key(desk, "*0")
    assert h.events_of(HandoffFailed)[-1].record.code == FlipFailure.NOT_TALKING
    assert invites(mobile) == invites(soft) == []
    assert h.only_call().handoffs[-1].code == FlipFailure.NOT_TALKING


async def test_a_second_code_while_the_menu_runs_is_taken_as_a_menu_key(h: Harness3) -> None:
    _, desk, mobile, _ = await talking(h)
    key(desk, "*0")
    with pytest.raises(Exception, match="in progress"):
        h.b2bua.flip(h.only_call().id, "202")
    key(desk, "1")
    assert len(invites(mobile)) == 1


async def test_a_device_in_another_call_is_not_offered(h: Harness3) -> None:
    _, desk, mobile, soft = await talking(h)
    bob = h.phone("301", 5301)
    bob.invite("202")
    await settle()
    assert len(invites(mobile)) == 1  # the mobile rings for Bob: it is in a call
    key(desk, "*0")
    (_ringing,) = invites(soft)  # the only one left: automatic, no menu
    assert h.heard("201") == []


async def test_no_answer_fails_back_with_a_tone_to_the_device_that_pressed(
    h_keep: Harness3,
) -> None:
    h = h_keep
    carol, desk, mobile, _soft = await talking(h)
    key(desk, "*0202")
    (ringing,) = invites(mobile)
    mobile.answer(ringing, 180)
    h.clock.advance(5)  # the user's flip timeout
    assert mobile.requests("CANCEL")[-1].call_id == ringing.call_id
    assert h.heard("201")[-1] == PlayTone(Tone.ERROR)
    assert h.events_of(HandoffFailed)[-1].record.code == FlipFailure.NO_ANSWER
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "201"
    assert call.state is CallState.TALKING
    assert carol.requests() == []


async def test_auto_hangup_off_keeps_the_old_dialog_and_the_announcement_plays(
    h_keep: Harness3,
) -> None:
    h = h_keep
    carol, desk, mobile, _soft = await talking(h)
    key(desk, "*0202")
    (ringing,) = invites(mobile)
    mobile.answer(ringing, 200, sdp(6202))
    await settle()
    call = h.only_call()
    assert call.callee is not None
    assert call.callee.device == "202"
    assert desk.requests("BYE") == []  # auto-hangup off: the desk's dialog stays up
    assert h.heard("401") == [PlayTone(Tone.BEEP)]  # the announcement, to Carol alone
    assert h.heard("202") == []
    # the desk's re-INVITE is refused, its BYE ends only its own dialog
    desk.request("INVITE", body=sdp(6201))
    assert desk.responses()[-1].status == 488
    desk.request("BYE")
    assert desk.responses()[-1].status == 200
    assert carol.requests() == []
    assert h.only_call() is call
    assert call.state is CallState.TALKING
    mobile.request("BYE")
    assert len(carol.requests("BYE")) == 1


async def test_a_kept_dialog_gets_a_bye_when_the_call_ends(h_keep: Harness3) -> None:
    h = h_keep
    carol, desk, mobile, _soft = await talking(h)
    key(desk, "*0202")
    mobile.answer(invites(mobile)[0], 200, sdp(6202))
    await settle()
    assert desk.requests("BYE") == []
    carol.request("BYE")
    assert len(desk.requests("BYE")) == 1
    assert len(mobile.requests("BYE")) == 1
    (record,) = h.b2bua.history.records()
    assert [(x.from_device, x.to_device, x.keys, x.how) for x in record.handoffs] == [
        ("201", "202", "*0 202", FlipWay.DIRECT)
    ]


async def test_a_call_put_on_hold_during_the_menu_is_refused_at_the_choice(h: Harness3) -> None:
    carol, desk, mobile, soft = await talking(h)
    key(desk, "*0")
    carol.request("INVITE", body=sdp(6401, direction="sendonly"))
    desk.reply(desk.last_request("INVITE"), 200, sdp(6201, direction="recvonly"))
    await settle()
    assert h.only_call().state is CallState.HELD
    key(desk, "1")
    assert h.events_of(HandoffFailed)[-1].record.code == FlipFailure.NOT_TALKING
    assert h.heard("201")[-1] == PlayPrompts(("not_available", "flip_cancelled"))
    assert invites(mobile) == invites(soft) == []
