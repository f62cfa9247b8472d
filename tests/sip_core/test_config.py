"""The PBX configuration: the example files, defaults, every error with its path and line, lookups
and round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sip_core.config import (
    AuthSettings,
    CallSettings,
    ConfigError,
    Device,
    DeviceType,
    DigestAlgorithm,
    FlipSettings,
    PbxConfig,
    RegistrarSettings,
    RtpSettings,
    SipSettings,
    TransferSettings,
    User,
    config_from_mapping,
    format_path,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
MD5_ONLY = (DigestAlgorithm.MD5,)  # the default


def test_digest_algorithm_is_the_digest_modules() -> None:
    from sip_core import digest

    assert DigestAlgorithm is digest.DigestAlgorithm


# --- the example files -----------------------------------------------------------------------


def test_develop_household() -> None:
    config = load_config(ROOT / "develop" / "pbx.yaml")

    def device(username: str, label: str, kind: DeviceType) -> Device:
        return Device(username, f"demo-{username}", label, kind, 0, MD5_ONLY)

    assert config == PbxConfig(
        sip=SipSettings("127.0.0.1", 5060, "home.arpa"),
        rtp=RtpSettings(40000, 40999),
        users=(
            User(
                "Alice",
                "200",
                (
                    device("201", "Office Desk Phone", DeviceType.DESK),
                    device("202", "Alice's Mobile", DeviceType.MOBILE),
                    device("203", "Alice's Softphone", DeviceType.SOFTPHONE),
                ),
            ),
            User(
                "Bob",
                "300",
                (
                    device("301", "Bob's Desk Phone", DeviceType.DESK),
                    device("302", "Bob's Mobile", DeviceType.MOBILE),
                ),
            ),
        ),
        registrar=RegistrarSettings(60, 3600, 3600, 5),
        auth=AuthSettings(300),
        calls=CallSettings(30),
        flip=FlipSettings("*0", 30),
        log_level="debug",
    )


def test_full_example_spells_out_every_default() -> None:
    config = load_config(ROOT / "pbx.example.yaml")
    defaults = config_from_mapping({"users": config.to_mapping()["users"]})
    assert dataclasses.replace(config, sip=SipSettings()) == defaults
    assert config.sip == SipSettings("0.0.0.0", 5060, "home.arpa")
    alice, bob = config.users
    assert [d.type for d in alice.devices] == [
        DeviceType.DESK,
        DeviceType.MOBILE,
        DeviceType.SOFTPHONE,
    ]
    assert alice.devices[0] == Device(
        "201", "change-me-201", "Office Desk Phone", DeviceType.DESK, 0, MD5_ONLY
    )
    assert bob.devices[0].type is DeviceType.HOME
    assert config.rtp.pair_count == 500


def test_runner_schema_from_the_issue() -> None:
    text = """\
sip: {listen: 127.0.0.1, port: 5060, domain: home.arpa}
rtp: {ports: 40000-40999}
users:
  - name: alice
    extension: "200"
    devices:
      - {username: "201", password: "desk-secret", label: Office Desk Phone, type: desk}
      - {username: "202", password: "mobile-secret", label: Alice's Mobile, type: mobile}
"""
    config = parse_config(text, "pbx.yaml")
    assert config.users == (
        User(
            "alice",
            "200",
            (
                Device("201", "desk-secret", "Office Desk Phone", DeviceType.DESK),
                Device("202", "mobile-secret", "Alice's Mobile", DeviceType.MOBILE),
            ),
        ),
    )


# --- defaults and lenient spellings ----------------------------------------------------------


def test_an_empty_mapping_is_all_defaults() -> None:
    config = config_from_mapping({})
    assert config == PbxConfig()
    assert config.sip == SipSettings("0.0.0.0", 5060, "home.arpa")
    assert config.rtp == RtpSettings(40000, 40999)
    assert config.users == ()
    assert config.registrar == RegistrarSettings(60, 3600, 3600, 5)
    assert config.auth.nonce_lifetime == 300
    assert config.calls.no_answer_timeout == 30
    assert config.flip == FlipSettings("*0", 30)
    assert config.log_level == "info"


def test_empty_sections_mean_defaults() -> None:
    config = parse_config("sip:\nrtp:\nusers:\nregistrar:\nauth:\ncalls:\nflip:\nlog_level:\n")
    assert config == PbxConfig()


def test_unquoted_numbers_are_accepted_as_text_and_keep_leading_zeros() -> None:
    config = parse_config(
        "users:\n"
        "  - name: 7\n"
        "    extension: 200\n"
        "    devices:\n"
        "      - {username: 201, password: 12345678, label: 42}\n"
        "      - {username: 0202, password: '00000000'}\n"
    )
    (user,) = config.users
    assert (user.name, user.extension) == ("7", "200")
    assert [(d.username, d.password, d.label) for d in user.devices] == [
        ("201", "12345678", "42"),
        ("0202", "00000000", "0202"),
    ]


def test_spellings_are_normalised() -> None:
    config = config_from_mapping(
        {
            "sip": {"listen": "::0", "domain": "Home.ARPA."},
            "users": [
                {
                    "name": "  alice ",
                    "extension": "200",
                    "devices": [
                        {
                            "username": "201",
                            "password": "long-enough",
                            "label": " Desk ",
                            "type": "Mobile",
                            "digest": ["sha-256", "md5"],
                        }
                    ],
                }
            ],
            "log_level": "WARNING",
        }
    )
    assert config.sip.listen == "::"
    assert config.sip.domain == "home.arpa"
    device = config.users[0].devices[0]
    assert config.users[0].name == "alice"
    assert device.label == "Desk"
    assert device.type is DeviceType.MOBILE
    assert device.digest == (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    assert config.log_level == "warning"


@pytest.mark.parametrize(
    "listen", ["localhost", "127.0.0.1", "0.0.0.0", "::1", "::", "fe80::1%eth0"]
)
def test_listen_accepts_ip_literals_and_localhost(listen: str) -> None:
    assert config_from_mapping({"sip": {"listen": listen}}).sip.listen == listen


@pytest.mark.parametrize(
    "domain", ["home.arpa", "pbx", "192.168.1.2", "2001:db8::1", "a-b.example"]
)
def test_domain_accepts_names_and_addresses(domain: str) -> None:
    assert config_from_mapping({"sip": {"domain": domain}}).sip.domain == domain


def test_rtp_range_edges() -> None:
    assert config_from_mapping({"rtp": {"ports": "1024-1025"}}).rtp == RtpSettings(1024, 1025)
    assert config_from_mapping({"rtp": {"ports": " 50000 - 65535 "}}).rtp == RtpSettings(
        50000, 65535
    )


# --- errors ----------------------------------------------------------------------------------

_USERS = """\
users:
  - name: alice
    extension: "200"
    devices:
      - username: "201"
        password: desk-secret
"""

ERROR_CASES: list[tuple[str, str]] = [
    # (file text, expected message after "t.yaml: ")
    (
        "# the brief's example: the second device has no password\n"
        "sip:\n"
        "  listen: 127.0.0.1\n"
        "  port: 5060\n"
        "  domain: home.arpa\n"
        "users:\n"
        "  - name: alice\n"
        '    extension: "200"\n'
        "    devices:\n"
        "      - username: '201'\n"
        "        password: desk-secret\n"
        "      - username: '202'\n"
        "        label: Alice's Mobile\n",
        "users[0].devices[1].password: required (line 12)",
    ),
    ("", "the configuration is empty"),
    ("- a\n- b\n", "the configuration must be a mapping (key: value), not a list (line 1)"),
    ("sipp:\n  port: 5060\n", "sipp: unknown key; did you mean 'sip'? (line 1)"),
    (
        "sip:\n  port: 5060\n  colour: red\n",
        "sip.colour: unknown key; known keys: listen, port, domain, workers (line 3)",
    ),
    (
        _USERS + "        pasword: x\n",
        "users[0].devices[0].pasword: unknown key; did you mean 'password'? (line 7)",
    ),
    ("sip: 5060\n", "sip: must be a mapping (key: value), not the number 5060 (line 1)"),
    (
        "sip: {listen: 192.168.1.300}\n",
        "sip.listen: must be an IP address (such as 0.0.0.0, 127.0.0.1 or ::) or localhost, not "
        "'192.168.1.300' (line 1)",
    ),
    (
        'sip: {listen: "[::1]"}\n',
        "sip.listen: write the IPv6 address without brackets: ::1 (line 1)",
    ),
    ("sip:\n  listen: 0\n", "sip.listen: must be text, not the number 0 (quote it) (line 2)"),
    ("sip: {port: 0}\n", "sip.port: must be between 1 and 65535, not 0 (line 1)"),
    ("sip: {port: 65536}\n", "sip.port: must be between 1 and 65535, not 65536 (line 1)"),
    (
        'sip: {port: "5060"}\n',
        "sip.port: must be a whole number, not the text '5060' (remove the quotes) (line 1)",
    ),
    ("sip: {port: 5060.0}\n", "sip.port: must be a whole number, not the text '5060.0' (line 1)"),
    ("sip: {port: true}\n", "sip.port: must be a whole number, not the boolean true (line 1)"),
    (
        "sip: {domain: bad_name}\n",
        "sip.domain: must be a domain name (such as home.arpa) or an IP address, not 'bad_name' "
        "(line 1)",
    ),
    (
        "sip: {domain: -x.arpa}\n",
        "sip.domain: must be a domain name (such as home.arpa) or an IP address, not '-x.arpa' "
        "(line 1)",
    ),
    (
        "rtp:\n  ports: 40000\n",
        "rtp.ports: must be a port range such as 40000-40999, not the number 40000 (line 2)",
    ),
    (
        "rtp: {ports: 40000:40999}\n",
        "rtp.ports: must be a port range such as 40000-40999, not the text '40000:40999' (line 1)",
    ),
    (
        "rtp: {ports: 1000-2000}\n",
        "rtp.ports: ports must be between 1024 and 65535 (got 1000-2000) (line 1)",
    ),
    (
        "rtp: {ports: 40000-70000}\n",
        "rtp.ports: ports must be between 1024 and 65535 (got 40000-70000) (line 1)",
    ),
    (
        "rtp: {ports: 40000-40000}\n",
        "rtp.ports: the first port must be below the last, for at least one pair (got "
        "40000-40000) (line 1)",
    ),
    (
        "rtp: {ports: 40999-40000}\n",
        "rtp.ports: the first port must be below the last, for at least one pair (got "
        "40999-40000) (line 1)",
    ),
    (
        "rtp: {ports: 40001-40999}\n",
        "rtp.ports: must start on an even port: RTP uses the even port, RTCP the odd (got 40001) "
        "(line 1)",
    ),
    ("rtp: {ports: 5000-5999}\n", "rtp.ports: must not include the SIP port 5060 (line 1)"),
    ("users: alice\n", "users: must be a list of users, not the text 'alice' (line 1)"),
    ("users:\n  -\n", "users[0]: must be a mapping (key: value), not empty (line 2)"),
    ("users:\n  - extension: 200\n", "users[0].name: required (line 2)"),
    ("users:\n  - name: '  '\n    extension: 200\n", "users[0].name: must not be blank (line 2)"),
    ("users:\n  - name: alice\n", "users[0].extension: required (line 2)"),
    (
        "users:\n  - name: alice\n    extension: 2 00\n",
        "users[0].extension: '2 00' is not a valid SIP user name: use 1 to 64 letters, digits, "
        "'.', '_' or '-' (line 3)",
    ),
    (
        'users:\n  - name: alice\n    extension: "*0"\n',
        "users[0].extension: '*0' is not a valid SIP user name: use 1 to 64 letters, digits, '.', "
        "'_' or '-' (line 3)",
    ),
    (
        "users:\n  - name: alice\n    extension: 200\n    devices: {}\n",
        "users[0].devices: must be a list of devices, not a mapping (line 4)",
    ),
    (
        "users:\n  - {name: alice, extension: 200}\n  - {name: Alice, extension: 300}\n",
        "users[1].name: 'Alice' is already used by users[0].name (line 3)",
    ),
    (
        "users:\n  - {name: alice, extension: 200}\n  - {name: bob, extension: 200}\n",
        "users[1].extension: '200' is already used by users[0].extension (line 3)",
    ),
    (
        _USERS + "  - name: bob\n    extension: 201\n",
        "users[1].extension: '201' is already used by users[0].devices[0].username (line 8)",
    ),
    (
        _USERS.replace('"201"', '"200"'),
        "users[0].devices[0].username: '200' is already used by users[0].extension (line 5)",
    ),
    (
        "users:\n"
        "  - name: alice\n"
        "    extension: 200\n"
        "    devices:\n"
        "      - {username: Alice.Desk, password: long-enough}\n"
        "  - name: bob\n"
        "    extension: 300\n"
        "    devices:\n"
        "      - {username: alice.desk, password: long-enough}\n",
        "users[1].devices[0].username: 'alice.desk' is already used by "
        "users[0].devices[0].username (line 9)",
    ),
    (
        _USERS.replace("desk-secret", "short"),
        "users[0].devices[0].password: too short: use at least 8 characters (line 6)",
    ),
    (
        _USERS.replace("desk-secret", "true"),
        "users[0].devices[0].password: must be text, not the boolean true (quote it) (line 6)",
    ),
    (
        _USERS.replace("desk-secret", "''"),
        "users[0].devices[0].password: must not be empty (line 6)",
    ),
    (
        _USERS.replace('"201"', "'a b'"),
        "users[0].devices[0].username: 'a b' is not a valid SIP user name: use 1 to 64 letters, "
        "digits, '.', '_' or '-' (line 5)",
    ),
    (_USERS + "        label: ' '\n", "users[0].devices[0].label: must not be blank (line 7)"),
    (
        _USERS + "        label: [a]\n",
        "users[0].devices[0].label: must be text, not a list (quote it) (line 7)",
    ),
    (
        _USERS + "        type: cell\n",
        "users[0].devices[0].type: must be one of desk, mobile, softphone, home, conference, not "
        "the text 'cell' (line 7)",
    ),
    (
        _USERS + "        priority: -1\n",
        "users[0].devices[0].priority: must be between 0 and 1000, not -1 (line 7)",
    ),
    (
        _USERS + "        priority: high\n",
        "users[0].devices[0].priority: must be a whole number, not the text 'high' (line 7)",
    ),
    (
        _USERS + "        digest: MD5\n",
        "users[0].devices[0].digest: must be a list such as [MD5, SHA-256], not the text 'MD5' "
        "(line 7)",
    ),
    (
        _USERS + "        digest: []\n",
        "users[0].devices[0].digest: must name at least one algorithm (line 7)",
    ),
    (
        _USERS + "        digest: [MD5, md5]\n",
        "users[0].devices[0].digest[1]: lists MD5 twice (line 7)",
    ),
    (
        _USERS + "        digest:\n          - SHA-256\n          - SHA-512\n",
        "users[0].devices[0].digest[1]: must be one of MD5, SHA-256, not the text 'SHA-512' (line "
        "9)",
    ),
    (
        "registrar: {min_expires: 0}\n",
        "registrar.min_expires: must be between 1 and 604800, not 0 (line 1)",
    ),
    (
        "registrar: {min_expires: 600, max_expires: 300}\n",
        "registrar.max_expires: must not be below min_expires (600), not 300 (line 1)",
    ),
    (
        "registrar:\n  default_expires: 30\n",
        "registrar.default_expires: must be between min_expires (60) and max_expires (3600), not "
        "30 (line 2)",
    ),
    (
        "registrar: {max_contacts: 0}\n",
        "registrar.max_contacts: must be between 1 and 100, not 0 (line 1)",
    ),
    (
        "registrar: {max_contact: 3}\n",
        "registrar.max_contact: unknown key; did you mean 'max_contacts'? (line 1)",
    ),
    (
        "auth: {nonce_lifetime: 5}\n",
        "auth.nonce_lifetime: must be between 10 and 86400, not 5 (line 1)",
    ),
    (
        "calls: {no_answer_timeout: 0}\n",
        "calls.no_answer_timeout: must be between 1 and 3600, not 0 (line 1)",
    ),
    (
        "flip:\n  code: '*0x'\n",
        "flip.code: must be 1 to 8 keypad keys (0-9, * and #), not '*0x' (line 2)",
    ),
    (
        "flip:\n  code: #1\n",
        "flip.code: required (quote a code that starts with '#' or '*': an unquoted '#' starts a "
        "comment) (line 2)",
    ),
    (
        _USERS + "flip: {code: 200}\n",
        "flip.code: '200' is also an extension or a device's username (line 7)",
    ),
    ("flip: {timeout: 0}\n", "flip.timeout: must be between 1 and 3600, not 0 (line 1)"),
    (
        "log_level: verbose\n",
        "log_level: must be one of debug, info, warning, error, critical, not the text 'verbose' "
        "(line 1)",
    ),
    ("sip:\n\tport: 5060\n", "tabs are not allowed for indentation; use spaces (line 2)"),
    ("sip: {port: 5060}\nsip: {port: 5061}\n", "duplicate key 'sip' (first on line 1) (line 2)"),
]


# Bad files as a person would write them: what PyYAML finds, in words, with the line.
ERROR_CASES += [
    ("sip:\n  port: 5060\n  domain: home.arpa: x\n", "a ':' followed by a space cannot appear"
     " here (quote a value that contains ': ', or check the indentation) (line 3)"),
    (_USERS + "        password: 'unclosed\n", "a quoted value is not closed (add the closing"
     " quote) (line 7)"),
    ("sip:\n  port: 5060\n log_level: info\n", "unexpected content here (check the indentation,"
     " and quote a value that has special characters) (line 3)"),
    ("sip: {port: 5060\nrtp: {}\n", "expected ',' or '}', but got ':' (while parsing a flow"
     " mapping on line 1) (line 2)"),
    (_USERS.replace("desk-secret", "!secret desk"), "tags such as '!secret' are not supported"
     " in this file (quote the value if it is text) (line 6)"),
    ("sip: {port: 5060}\n---\nsip: {port: 5061}\n", "only one document is allowed (found a"
     " second '---') (line 2)"),
    (_USERS + "        password: another-one\n", "duplicate key 'password' (first on line 6)"
     " (line 7)"),
    ("sip:\n  port: 0o17\n", "sip.port: must be a whole number, not the text '0o17' (line 2)"),
    ("sip:\n  port: 05060\n", "sip.port: must be a whole number, not the text '05060' (write it"
     " without leading zeros) (line 2)"),
    ("*0: x\n", '["*0"]: unknown key; known keys: sip, rtp, users, registrar, auth,'
     " calls, flip, security, log_level, discovery, trunks, dialplan, transfer, groups, handoff,"
     " group_presence, tls (line 1)"),
    ("flip: [*0]\n", "flip: must be a mapping (key: value), not a list (line 1)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_errors_name_the_key_path_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.yaml")
    assert str(caught.value) == f"t.yaml: {expected}"
    assert caught.value.source == "t.yaml"


def test_an_unquoted_star_code_is_the_code_the_user_means() -> None:
    # In YAML `*0` is an alias; in a PBX file it is the flip code, quoted or not.
    for written in ("*0", '"*0"', "'*0'"):
        assert parse_config(f"flip:\n  code: {written}\n").flip.code == "*0"
    assert parse_config("flip: {code: *01}\n").flip.code == "*01"
    with pytest.raises(ConfigError, match=r"flip\.code: .* not '&1' \(line 1\)"):
        parse_config("flip: {code: &1}\n")  # an anchor in YAML; text here, and not a code


def test_leading_zeros_are_kept_and_never_octal() -> None:
    config = parse_config(
        "users:\n  - name: zed\n    extension: 0200\n"
        "    devices: [{username: 0201, password: 01234567}]\n"
    )
    (user,) = config.users
    assert user.extension == "0200"
    assert (user.devices[0].username, user.devices[0].password) == ("0201", "01234567")


def test_error_parts_are_attributes() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_USERS.replace("desk-secret", "short"), "pbx.yaml")
    error = caught.value
    assert error.key_path == ("users", 0, "devices", 0, "password")
    assert error.path == "users[0].devices[0].password"
    assert error.reason == "too short: use at least 8 characters"
    assert error.line == 6


def test_mapping_errors_have_a_path_but_no_line() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(
            {"users": [{"name": "alice", "extension": "200", "devices": [{"username": "201"}]}]}
        )
    assert str(caught.value) == "users[0].devices[0].password: required"
    assert caught.value.line is None
    assert caught.value.source is None


def test_mapping_numbers_from_forms() -> None:
    data = {"sip": {"port": 5062.0}, "flip": {"timeout": 20.0}}
    config = config_from_mapping(data)
    assert (config.sip.port, config.flip.timeout) == (5062, 20)
    assert isinstance(config.sip.port, int)
    with pytest.raises(ConfigError, match=r"^sip\.port: must be a whole number, not a float$"):
        config_from_mapping({"sip": {"port": 5060.5}})


def test_mapping_with_non_text_keys() -> None:
    with pytest.raises(ConfigError, match=r"^sip: keys must be text, not the number 1$"):
        config_from_mapping({"sip": {1: "x"}})


def test_format_path_quotes_odd_keys() -> None:
    assert format_path(("users", 0, "devices", 1, "password")) == "users[0].devices[1].password"
    assert format_path(("sip", "my key")) == 'sip["my key"]'
    assert format_path(("a b",)) == '["a b"]'
    assert format_path(()) == ""


# --- files -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"users:\n  - name: J\xf6rg\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (line 2)"


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.symlink_to(path)  # a symlink loop fails to open for everyone, root included
    with pytest.raises(ConfigError, match=r"loop\.yaml: cannot read: "):
        load_config(path)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pbx.yaml"
    path.write_text("sip:\n  port: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: sip.port: must be between 1 and 65535, not 0 (line 2)"


# --- lookups ---------------------------------------------------------------------------------


def test_lookups() -> None:
    config = load_config(ROOT / "develop" / "pbx.yaml")
    alice, bob = config.users
    desk = config.device("201")
    assert desk is alice.devices[0]
    assert config.user_for_device("302") is bob
    assert config.user_by_extension("300") is bob
    assert config.device("200") is None  # an extension is not a device
    assert config.user_for_device("999") is None
    assert config.user_by_extension("201") is None
    assert [(user.name, device.username) for user, device in config.devices()] == [
        ("Alice", "201"),
        ("Alice", "202"),
        ("Alice", "203"),
        ("Bob", "301"),
        ("Bob", "302"),
    ]


def test_lookups_follow_replace() -> None:
    config = load_config(ROOT / "develop" / "pbx.yaml")
    carol = User("carol", "400", (Device("401", "long-enough", "Carol's Desk"),))
    changed = dataclasses.replace(config, users=(*config.users, carol))
    assert changed.user_for_device("401") == carol
    assert config.device("401") is None


def test_config_is_frozen_and_hashable() -> None:
    config = config_from_mapping({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log_level = "debug"  # type: ignore[misc]
    assert hash(config) == hash(PbxConfig())
    assert "_by_username" not in repr(config)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pbx.example.yaml", "develop/pbx.yaml"])
def test_to_mapping_round_trips(name: str) -> None:
    config = load_config(ROOT / name)
    mapping = config.to_mapping()
    assert config_from_mapping(mapping) == config
    # Written by PyYAML (which quotes "200" and "*0"), read back by our reader.
    assert parse_config(yaml.safe_dump(mapping, sort_keys=False), "dumped") == config


def test_to_mapping_is_plain_data_in_the_file_schema() -> None:
    config = parse_config(_USERS)
    assert config.to_mapping()["users"] == [
        {
            "name": "alice",
            "extension": "200",
            "devices": [
                {
                    "username": "201",
                    "password": "desk-secret",
                    "label": "201",
                    "type": "desk",
                    "priority": 0,
                    "digest": ["MD5"],
                }
            ],
        }
    ]
    assert config.to_mapping()["rtp"] == {"ports": "40000-40999", "timeout": 60, "realtime": True}
    assert config.to_mapping()["sip"]["workers"] == 0


def test_every_setting_round_trips_not_only_the_defaults() -> None:
    config = config_from_mapping(
        {"sip": {"workers": 2}, "rtp": {"ports": "50000-50999", "realtime": False}}
    )
    assert config.sip.workers == 2
    assert config.rtp == RtpSettings(50000, 50999, realtime=False)
    assert config_from_mapping(config.to_mapping()) == config


def test_real_time_media_is_on_unless_turned_off_and_takes_only_a_boolean() -> None:
    assert config_from_mapping({}).rtp.realtime is True
    assert config_from_mapping({"rtp": {"realtime": False}}).rtp.realtime is False
    with pytest.raises(ConfigError, match=r"rtp\.realtime: must be true or false, not the text"):
        config_from_mapping({"rtp": {"realtime": "yes please"}})


def test_redacted_mapping_hides_passwords() -> None:
    config = load_config(ROOT / "develop" / "pbx.yaml")
    text = repr(config.to_mapping(redact=True))
    assert "demo-" not in text
    assert text.count("**REDACTED**") == 5


# --- properties ------------------------------------------------------------------------------

_EXAMPLE_TEXT = (ROOT / "develop" / "pbx.yaml").read_text(encoding="utf-8")


def _outcome(text: str) -> PbxConfig | ConfigError:
    """Parse; return the config or the ConfigError (anything else fails the test)."""
    try:
        return parse_config(text, "fuzz.yaml")
    except ConfigError as error:
        return error


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_EXAMPLE_TEXT)),
    st.text(alphabet=" -:#[]{},'\"\n\t*&!|>x10", min_size=1, max_size=3),
)
def test_a_damaged_file_gives_a_config_or_a_config_error(position: int, insert: str) -> None:
    result = _outcome(_EXAMPLE_TEXT[:position] + insert + _EXAMPLE_TEXT[position:])
    if isinstance(result, ConfigError):
        assert str(result).startswith("fuzz.yaml: ")
        assert result.line is not None


_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.sampled_from(["", "x", "200", "*0", "MD5", "desk"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["name", "extension", "devices", "username", "password", "port", "ports", "x"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


def _mapping_outcome(data: dict[str, Any]) -> PbxConfig | ConfigError:
    try:
        return config_from_mapping(data)
    except ConfigError as error:
        return error


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["sip", "rtp", "users", "registrar", "auth", "calls", "flip", "log_level"]),
        _values,
        max_size=4,
    )
)
def test_any_mapping_gives_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    result = _mapping_outcome(data)
    if isinstance(result, ConfigError):
        assert result.line is None
        assert result.reason
    else:
        assert config_from_mapping(result.to_mapping()) == result


# -- transfer codes --------------------------------------------------------------------------


def test_transfer_defaults_are_seed_000s_codes() -> None:
    config = config_from_mapping({})
    assert config.transfer == TransferSettings("*2", "**", 30, 30, "default")
    assert config_from_mapping(config.to_mapping()) == config


def test_the_voipnow_preset_gives_hash_one_and_star_two() -> None:
    config = config_from_mapping({"transfer": {"preset": "VoipNow"}})
    assert config.transfer == TransferSettings("#1", "*2", 30, 30, "voipnow")
    assert config_from_mapping(config.to_mapping()) == config


def test_a_code_given_overrides_the_preset() -> None:
    data = {"transfer": {"preset": "voipnow", "blind_code": "*7", "recall_timeout": 10}}
    transfer = config_from_mapping(data).transfer
    assert (transfer.blind_code, transfer.attended_code, transfer.recall_timeout) == (
        "*7",
        "*2",
        10,
    )


@pytest.mark.parametrize(
    ("transfer", "expected"),
    [
        ({"preset": "asterisk"}, "transfer.preset: must be one of default, voipnow"),
        ({"blind_code": None}, "transfer.blind_code: required (quote a code"),
        ({"blind_code": "*2a"}, "transfer.blind_code: must be 1 to 8 keypad keys"),
        ({"attended_code": "*2"}, "transfer.attended_code: '*2' and transfer.blind_code '*2'"),
        ({"blind_code": "*0"}, "transfer.blind_code: '*0' and flip.code '*0' cannot both"),
        ({"attended_code": "*21"}, "transfer.attended_code: '*21' and transfer.blind_code '*2'"),
        ({"timeout": 0}, "transfer.timeout: "),
        ({"code": "*2"}, "transfer.code: unknown key"),
    ],
)
def test_bad_transfer_settings_are_refused_with_their_key(
    transfer: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"transfer": transfer})
    assert str(caught.value).startswith(expected)


def test_a_transfer_code_may_not_be_an_extension() -> None:
    users = [{"name": "a", "extension": "12", "devices": [{"username": "21", "password": "x" * 8}]}]
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"users": users, "transfer": {"blind_code": "12"}})
    assert str(caught.value).startswith("transfer.blind_code: '12' is also an extension")
