"""The one check of every feature code (`sip_core.dialled_codes`, `config.check_feature_codes`):
each pair of codes that can clash, each code against the numbers dialled from idle, and a new
code joining the check by being declared."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from sip_core.config import (
    CodeConflict,
    ConfigError,
    FlipSettings,
    PbxConfig,
    check_feature_codes,
    config_from_mapping,
    parse_config,
    transfer_settings,
)
from sip_core.dialled_codes import (
    CodeScope,
    DeclaredCode,
    DialledNumber,
    declared_codes,
    feature_code,
    find_clash,
)

#: Every code dialled in a call or from idle, as (section, key) in the configuration.
CODES = (
    ("flip", "code"),
    ("transfer", "blind_code"),
    ("transfer", "attended_code"),
    ("transfer", "complete_code"),
    ("transfer", "cancel_code"),
    ("handoff", "code"),
)


def household(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "users": [
            {
                "name": "Alice",
                "extension": "200",
                "devices": [{"username": "201", "password": "desk-secret"}],
            },
            {
                "name": "Bob",
                "extension": "300",
                "devices": [{"username": "301", "password": "bob-secret"}],
            },
        ],
        "groups": [{"name": "Home", "pilot": "250", "members": ["201", "301"]}],
    }
    data.update(sections)
    return data


def with_codes(codes: dict[tuple[str, str], str]) -> dict[str, Any]:
    sections: dict[str, dict[str, str]] = {}
    for (section, key), code in codes.items():
        sections.setdefault(section, {})[key] = code
    return household(**sections)


def conflict(data: dict[str, Any]) -> CodeConflict:
    with pytest.raises(CodeConflict) as caught:
        config_from_mapping(data)
    return caught.value


def test_the_defaults_and_every_declared_code() -> None:
    config = config_from_mapping(household())
    found = {declared.key_path: declared.code for declared in check_feature_codes(config)}
    assert found == {
        ("flip", "code"): "*0",
        ("transfer", "blind_code"): "*2",
        ("transfer", "attended_code"): "**",
        ("transfer", "complete_code"): "*3",
        ("transfer", "cancel_code"): "*4",
        ("handoff", "code"): "*5",
        ("group_presence", "present_code"): "*61",
        ("group_presence", "absent_code"): "*60",
    }


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations(CODES, 2)), ids=".".join)
@pytest.mark.parametrize("same", [True, False], ids=["equal", "prefix"])
def test_every_pair_of_codes_clashes(
    first: tuple[str, str], second: tuple[str, str], same: bool
) -> None:
    """Two codes equal, or one starting the other: refused on the later one, naming the earlier;
    the pair apart (the same codes, not touching) is accepted."""
    earlier, later = "*71", ("*71" if same else "*719")
    codes = {first: earlier, second: later}
    # keep every other code away from *7...
    spare = iter(["*0", "*2", "**", "*3", "*4", "*5"])
    for key in CODES:
        if key not in codes:
            codes[key] = next(code for code in spare if code not in codes.values())
    error = conflict(with_codes(codes))
    assert error.key_path == second
    name = f"{'.'.join(first)} {earlier!r}"
    assert error.clashes_with == name
    assert f"{later!r} and {name} cannot both be codes" in error.reason
    assert "one starts the other" in error.reason
    apart = {**codes, second: "*81"}
    assert config_from_mapping(with_codes(apart)) is not None


def test_the_default_handoff_code_clashed_unseen_with_a_transfer_code() -> None:
    """``handoff`` unset (its default *5) was checked against nothing: a blind code *5 got
    through and the collector could never tell a push from a transfer."""
    error = conflict(household(transfer={"blind_code": "*5"}))
    assert error.key_path == ("handoff", "code")
    assert error.clashes_with == "transfer.blind_code '*5'"
    error = conflict(household(transfer={"complete_code": "*55"}))
    assert error.key_path == ("handoff", "code")
    assert "one starts the other" in error.reason


@pytest.mark.parametrize("key", CODES, ids=".".join)
@pytest.mark.parametrize(
    ("number", "what"),
    [("200", "an extension"), ("301", "a device's username")],
)
def test_no_code_is_a_number_someone_dials(key: tuple[str, str], number: str, what: str) -> None:
    error = conflict(with_codes({key: number}))
    assert error.key_path == key
    assert f"{number!r} is also an extension or a device's username" == error.reason
    assert what in error.reason


@pytest.mark.parametrize("key", CODES, ids=".".join)
def test_no_pilot_is_a_code(key: tuple[str, str]) -> None:
    """The group's pilot 250 and a code 250: refused on the pilot, naming the code."""
    error = conflict(with_codes({key: "250"}))
    assert error.key_path == ("groups", 0, "pilot")
    assert error.clashes_with == f"{'.'.join(key)} '250'"
    assert "is also the feature code" in error.reason


def test_the_runner_gives_the_file_line_of_the_clash() -> None:
    text = (
        "users:\n"
        "  - name: alice\n"
        '    extension: "200"\n'
        "    devices:\n"
        '      - {username: "201", password: desk-secret}\n'
        'handoff: {code: "*0"}\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml")
    assert str(caught.value) == (
        "t.yaml: handoff.code: '*0' and flip.code '*0' cannot both be codes: one starts the"
        " other (line 6)"
    )


def test_home_assistants_transfer_section_is_checked_against_every_code() -> None:
    """The options keep ``transfer`` apart: its check blames the transfer's code, against the
    handoff code too (it was checked against the flip code only)."""
    config = config_from_mapping(household(handoff={"code": "*8"}))
    with pytest.raises(CodeConflict) as caught:
        transfer_settings({"blind_code": "*8"}, config)
    assert caught.value.key_path == ("transfer", "blind_code")
    assert caught.value.clashes_with == "handoff.code '*8'"
    with pytest.raises(CodeConflict) as caught:
        transfer_settings({"attended_code": "*0"}, config)
    assert caught.value.key_path == ("transfer", "attended_code")
    assert caught.value.clashes_with == "flip.code '*0'"
    with pytest.raises(CodeConflict) as caught:  # a pilot: blamed on the code set here
        transfer_settings({"cancel_code": "250"}, config)
    assert caught.value.key_path == ("transfer", "cancel_code")
    assert caught.value.clashes_with == "the pilot of group 'Home'"
    with pytest.raises(CodeConflict) as caught:  # ... or on the pilot, for the group's form
        transfer_settings({"cancel_code": "250"}, config, prefer="groups")
    assert caught.value.key_path == ("groups", 0, "pilot")
    assert caught.value.clashes_with == "transfer.cancel_code '250'"
    assert transfer_settings({"blind_code": "*7"}, config).blind_code == "*7"


# -- a new code joins by being declared ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PresenceCodes:
    """A feature's new codes, dialled from an idle phone (what a new section declares)."""

    present_code: str = feature_code("*61", CodeScope.IDLE)
    absent_code: str = feature_code("*60", CodeScope.IDLE)
    label: str = "not a code"


@dataclass(frozen=True, slots=True)
class _Extended:
    flip: FlipSettings = field(default_factory=FlipSettings)
    presence: _PresenceCodes = field(default_factory=_PresenceCodes)
    more: tuple[_PresenceCodes, ...] = ()


def test_a_declared_code_is_found_and_checked_with_the_others() -> None:
    config = _Extended()
    assert declared_codes(config) == [
        DeclaredCode(("flip", "code"), "*0", CodeScope.IN_CALL),
        DeclaredCode(("presence", "present_code"), "*61", CodeScope.IDLE),
        DeclaredCode(("presence", "absent_code"), "*60", CodeScope.IDLE),
    ]
    assert find_clash(declared_codes(config)) is None
    clash = find_clash(declared_codes(_Extended(presence=_PresenceCodes(absent_code="*61"))))
    assert clash is not None
    assert clash.key_path == ("presence", "absent_code")
    assert clash.clashes_with == "presence.present_code '*61'"
    # in a tuple of sections too, with its index in the path
    nested = _Extended(more=(_PresenceCodes("*71", "*70"),))
    assert [c.key_path for c in declared_codes(nested)][-2:] == [
        ("more", 0, "present_code"),
        ("more", 0, "absent_code"),
    ]


def test_codes_dialled_in_different_places_may_share_a_start_but_not_be_equal() -> None:
    """An idle-only code and an in-call-only code are read by different collectors: *0 and
    *01 can be told apart; the very same code cannot mean two things."""
    in_call = DeclaredCode(("flip", "code"), "*0", CodeScope.IN_CALL)
    idle = DeclaredCode(("presence", "present_code"), "*01", CodeScope.IDLE)
    assert find_clash([in_call, idle]) is None
    same = DeclaredCode(("presence", "present_code"), "*0", CodeScope.IDLE)
    clash = find_clash([in_call, same])
    assert clash is not None
    assert "one code, two meanings" in clash.reason
    both = DeclaredCode(("handoff", "code"), "*01", CodeScope.BOTH)
    clash = find_clash([in_call, both])  # dialled in a call too: a prefix clashes
    assert clash is not None
    assert clash.key_path == ("handoff", "code")
    numbers = {"*01": DialledNumber("an extension", ("users", 0, "extension"))}
    clash = find_clash([idle], numbers)
    assert clash is not None
    assert (clash.key_path, clash.clashes_with) == (("presence", "present_code"), "an extension")
    clash = find_clash([idle], numbers, prefer="users")
    assert clash is not None
    assert clash.key_path == ("users", 0, "extension")


def test_a_hand_built_configuration_is_checked_the_same_way() -> None:
    config = PbxConfig(flip=FlipSettings(code="*5"))
    with pytest.raises(CodeConflict) as caught:
        check_feature_codes(config)
    assert caught.value.key_path == ("handoff", "code")
    assert caught.value.clashes_with == "flip.code '*5'"
