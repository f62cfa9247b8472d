"""The trunks and dial plan in the configuration: defaults, the dial plan's answers, and every
field error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sip_core.config import REDACTED, ConfigError, config_from_mapping, parse_config
from sip_core.trunk.config import (
    DEFAULT_EMERGENCY,
    Did,
    HostPort,
    OutboundRoute,
    TrunkTransport,
)


def base(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "users": [
            {
                "name": "alice",
                "extension": "200",
                "devices": [{"username": "201", "password": "desk-secret"}],
            },
            {
                "name": "bob",
                "extension": "300",
                "devices": [{"username": "301", "password": "bob-secret"}],
            },
        ],
        "trunks": [
            {
                "name": "provider",
                "host": "sip.provider.example",
                "username": "4930123456",
                "password": "provider-pw",
                "dids": [
                    {"number": "+4930123456"},
                    {"number": "+4930123457", "destination": "bob"},
                ],
            }
        ],
    }
    data.update(extra)
    return data


def test_a_minimal_trunk_gets_the_documented_defaults() -> None:
    config = config_from_mapping(base())
    assert config.trunking is not None
    trunk = config.trunking.trunks[0]
    assert trunk.port == 5060
    assert trunk.transport is TrunkTransport.UDP
    assert trunk.auth_user == "4930123456"
    assert trunk.realm is None
    assert trunk.aor_domain == "sip.provider.example"
    assert trunk.next_hop == HostPort("sip.provider.example", 5060)
    assert trunk.register is True
    assert trunk.register_interval == 600
    assert trunk.presented_id == "4930123456"
    # A DID without a destination rings the first user.
    assert trunk.dids == (Did("+4930123456", "alice"), Did("+4930123457", "bob"))
    plan = config.trunking.dialplan
    assert plan.routes == ()
    assert plan.emergency == DEFAULT_EMERGENCY
    assert plan.emergency_trunk == "provider"
    assert plan.call_out is None
    assert config.trunking.did("+4930123457") == (trunk, Did("+4930123457", "bob"))
    assert config.trunking.did("+49") is None


def test_no_trunks_section_means_no_trunking() -> None:
    data = base()
    del data["trunks"]
    assert config_from_mapping(data).trunking is None


def test_every_key_round_trips_and_the_password_is_redacted() -> None:
    data = base(
        dialplan={
            "routes": [
                {"prefix": "0", "trunk": "provider", "strip": True},
                {"external": True, "trunk": "second"},
            ],
            "emergency": ["112", 110],
            "emergency_trunk": "second",
            "call_out": ["alice"],
        }
    )
    data["trunks"].append(
        {
            "name": "second",
            "host": "192.0.2.10",
            "port": 5080,
            "transport": "TCP",
            "username": "line2",
            "auth_username": "auth-line2",
            "password": "x",
            "realm": "fritz.box",
            "domain": "fritz.box",
            "outbound_proxy": "[2001:db8::1]:5070",
            "register": False,
            "register_interval": 120,
            "caller_id": "+4930999",
        }
    )
    config = config_from_mapping(data)
    assert config_from_mapping(config.to_mapping()) == config
    second = config.trunking.trunks[1] if config.trunking else None
    assert second is not None
    assert second.outbound_proxy == HostPort("2001:db8::1", 5070)
    assert second.next_hop == HostPort("2001:db8::1", 5070)
    assert second.transport is TrunkTransport.TCP
    redacted = config.to_mapping(redact=True)
    assert [t["password"] for t in redacted["trunks"]] == [REDACTED, REDACTED]
    assert "provider-pw" not in repr(redacted)


def test_the_dial_plan_answers() -> None:
    data = base(
        dialplan={
            "routes": [
                {"prefix": "0", "trunk": "provider", "strip": True},
                {"external": True, "trunk": "provider"},
            ],
            "emergency": ["112"],
            "call_out": ["bob"],
        }
    )
    plan = config_from_mapping(data).trunking.dialplan  # type: ignore[union-attr]
    call = plan.outbound("0301234", internal=False)
    assert call is not None
    assert (call.trunk, call.number, call.emergency) == ("provider", "301234", False)
    assert plan.outbound("200", internal=True) is None
    external = plan.outbound("+4989123", internal=False)
    assert external is not None
    assert external.number == "+4989123"
    assert plan.may_call_out("bob", external)
    assert not plan.may_call_out("alice", external)
    assert not plan.may_call_out(None, external)
    # Emergency numbers go out for everyone, dialled plain or behind the prefix.
    for dialled in ("112", "0112"):
        emergency = plan.outbound(dialled, internal=False)
        assert emergency is not None
        assert emergency.emergency
        assert emergency.number == "112"
        assert plan.may_call_out("alice", emergency)
        assert plan.may_call_out(None, emergency)
    assert OutboundRoute("t", "0").matches("0", internal=False) is False  # the prefix alone


def test_the_runner_file_names_the_line() -> None:
    text = """\
users:
  - name: alice
    extension: "200"
    devices:
      - {username: "201", password: desk-secret}
trunks:
  - name: provider
    host: sip.provider.example
    username: "4930"
    password: pw
    transport: tls
    ca_file: /nonexistent/provider-ca.pem
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "pbx.yaml")
    assert str(caught.value) == (
        "pbx.yaml: trunks[0].ca_file: no such file: /nonexistent/provider-ca.pem (line 12)"
    )


def _trunk_error(path: str, value: Any) -> dict[str, Any]:
    data = base()
    target: Any = data["trunks"][0]
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "where", "reason"),
    [
        ("name", _DELETE, "trunks[0].name", "required"),
        ("name", "my provider", "trunks[0].name", "use 1 to 32 letters"),
        ("host", _DELETE, "trunks[0].host", "required"),
        ("host", "bad host!", "trunks[0].host", "must be a domain name"),
        ("port", 0, "trunks[0].port", "between 1 and 65535"),
        ("port", "5060", "trunks[0].port", "remove the quotes"),
        ("transport", "sctp", "trunks[0].transport", "must be one of udp, tcp, tls"),
        ("ca_file", "/nonexistent/ca.pem", "trunks[0].ca_file", "only used with transport: tls"),
        ("verify", "no", "trunks[0].verify", "must be true or false"),
        ("username", _DELETE, "trunks[0].username", "required"),
        ("username", "a b", "trunks[0].username", "must be a phone number"),
        ("auth_username", 'a"b', "trunks[0].auth_username", "quotes"),
        ("password", _DELETE, "trunks[0].password", "required"),
        ("password", "", "trunks[0].password", "must not be empty"),
        ("realm", 5, "trunks[0].realm", "must be text"),
        ("domain", "-x-", "trunks[0].domain", "must be a domain name"),
        ("outbound_proxy", "proxy:99999", "trunks[0].outbound_proxy", "between 1 and 65535"),
        ("outbound_proxy", "a:b:c", "trunks[0].outbound_proxy", "host or host:port"),
        ("register", "yes", "trunks[0].register", "true or false"),
        ("register_interval", 30, "trunks[0].register_interval", "between 60 and 86400"),
        ("caller_id", "not a number", "trunks[0].caller_id", "must be a phone number"),
        ("dids", "+4930", "trunks[0].dids", "must be a list of DIDs"),
        ("dids.0.number", _DELETE, "trunks[0].dids[0].number", "required"),
        ("dids.0.destination", "carol", "trunks[0].dids[0].destination", "user's name or"),
        ("dids.1.number", "+4930123456", "trunks[0].dids[1].number", "already delivered by"),
        ("dids.0.extension", "200", "trunks[0].dids[0].extension", "unknown key"),
        ("passwd", "x", "trunks[0].passwd", "did you mean 'password'"),
    ],
)
def test_trunk_field_errors(path: str, value: Any, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_trunk_error(path, value))
    assert caught.value.path == where
    assert reason in caught.value.reason


def test_two_trunks_with_one_name() -> None:
    data = base()
    data["trunks"].append(copy.deepcopy(data["trunks"][0]) | {"name": "Provider", "dids": []})
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    assert caught.value.path == "trunks[1].name"
    assert "already used by trunks[0].name" in caught.value.reason


def test_a_did_needs_a_user_to_ring() -> None:
    data = base()
    data["users"] = []
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    assert caught.value.path == "trunks[0].dids[0].destination"


@pytest.mark.parametrize(
    ("dialplan", "where", "reason"),
    [
        ({"routes": [{"prefix": "0"}]}, "dialplan.routes[0].trunk", "configured trunk"),
        ({"routes": [{"prefix": "0", "trunk": "x"}]}, "dialplan.routes[0].trunk", "provider"),
        ({"routes": [{"trunk": "provider"}]}, "dialplan.routes[0]", "either a prefix or"),
        (
            {"routes": [{"prefix": "0", "external": True, "trunk": "provider"}]},
            "dialplan.routes[0]",
            "either a prefix or",
        ),
        (
            {"routes": [{"external": True, "trunk": "provider", "strip": True}]},
            "dialplan.routes[0].strip",
            "only a prefix route",
        ),
        (
            {"routes": [{"prefix": "9x", "trunk": "provider"}]},
            "dialplan.routes[0].prefix",
            "keypad",
        ),
        (
            {"routes": [{"prefix": "2", "trunk": "provider"}]},
            "dialplan.routes[0].prefix",
            "internal number '200'",
        ),
        (
            {"routes": [{"prefix": "*", "trunk": "provider"}]},
            "dialplan.routes[0].prefix",
            "internal number '**'",  # the attended transfer's code (every code is internal)
        ),
        ({"routes": "0"}, "dialplan.routes", "must be a list"),
        ({"emergency": ["11a"]}, "dialplan.emergency[0]", "a number such as 112"),
        ({"emergency": ["300"]}, "dialplan.emergency[0]", "also an internal number"),
        ({"emergency_trunk": "nope"}, "dialplan.emergency_trunk", "configured trunk"),
        ({"call_out": ["carol"]}, "dialplan.call_out[0]", "a user's name"),
        ({"callout": ["alice"]}, "dialplan.callout", "did you mean 'call_out'"),
    ],
)
def test_dialplan_field_errors(dialplan: dict[str, Any], where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(base(dialplan=dialplan))
    assert caught.value.path == where
    assert reason in caught.value.reason


def test_a_dialplan_without_trunks_is_refused() -> None:
    data = base(dialplan={"routes": []})
    del data["trunks"]
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    assert caught.value.path == "dialplan"


def test_the_documented_example_loads() -> None:
    """pbx.example.yaml's commented trunk block, uncommented, is a valid configuration."""
    text = (Path(__file__).resolve().parents[2] / "pbx.example.yaml").read_text(encoding="utf-8")
    head, _, rest = text.partition("# --- trunks example begins ---\n")
    block, _, _ = rest.partition("# --- trunks example ends ---")
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    config = parse_config(head + uncommented, "pbx.example.yaml")
    assert config.trunking is not None
    trunk = config.trunking.trunks[0]
    assert trunk.dids == (Did("+4930123456", "alice"), Did("+4930123457", "301"))
    assert trunk.outbound_proxy == HostPort("proxy.provider.example", 5060)
    assert config.trunking.dialplan.call_out == ("alice",)
    assert parse_config(yaml.safe_dump(config.to_mapping(), sort_keys=False), "dumped") == config
