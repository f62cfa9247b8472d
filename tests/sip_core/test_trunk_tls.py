"""Trunks over TLS: the configuration's checks, what the registration and the dial plan send,
which sources count as the trunk, a refused certificate as the trunk's state, and the PBX's own
TLS listener section."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sip_core.config import ConfigError, config_from_mapping
from sip_core.events import TrunkFailure, TrunkStatus
from sip_core.tls import client_context, server_context
from sip_core.transport import Address, CertificateError, Source, TransportKind, TransportLayer
from sip_core.trunk.config import DialPlan, Trunk, Trunking, TrunkTransport
from sip_core.trunk.egress import OutboundTarget, TrunkEgress
from sip_core.trunk.ingress import TrunkIngress
from sip_core.trunk.registration import KEEPALIVE_INTERVAL, TrunkRegistration
from sip_core.trunk.tls import TrunkTlsClients
from tests.tls_certs import TestCa

from .test_transport_tls import _request
from .test_trunk_config import base
from .test_trunk_registration import harness


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa.create(tmp_path / "ca")


def tls_trunk(**changes: Any) -> dict[str, Any]:
    data = base()
    data["trunks"][0].update({"transport": "tls", **changes})
    return data


def only_trunk(data: dict[str, Any]) -> Trunk:
    trunking = config_from_mapping(data).trunking
    assert trunking is not None
    return trunking.trunks[0]


def field_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data)
    return caught.value


# -- configuration --------------------------------------------------------------------------------


def test_a_tls_trunk_defaults_to_port_5061_and_the_system_trust() -> None:
    trunk = only_trunk(tls_trunk())
    assert trunk.transport is TrunkTransport.TLS
    assert trunk.transport.kind is TransportKind.TLS
    assert trunk.port == 5061
    assert trunk.ca_file is None
    assert trunk.verify is True
    assert only_trunk(tls_trunk(port=5071)).port == 5071
    assert only_trunk(base()).port == 5060  # udp keeps 5060


def test_a_ca_file_is_loaded_and_kept(ca: TestCa) -> None:
    trunk = only_trunk(tls_trunk(ca_file=str(ca.ca_file)))
    assert trunk.ca_file == str(ca.ca_file)
    mapping = trunk.to_mapping(redact=True)
    assert mapping["ca_file"] == str(ca.ca_file)
    assert mapping["verify"] is True
    assert mapping["password"] != "provider-pw"  # redacted; the CA file is no secret
    again = config_from_mapping(
        config_from_mapping(tls_trunk(ca_file=str(ca.ca_file))).to_mapping()
    )
    assert again.trunking is not None
    assert again.trunking.trunks[0] == trunk


def test_verification_can_be_turned_off() -> None:
    trunk = only_trunk(tls_trunk(verify=False))
    assert trunk.verify is False


@pytest.mark.parametrize(
    ("changes", "where", "reason"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "no such file: /nonexistent/ca.pem"),
        ({"ca_file": "ca.pem"}, "ca_file", "must be an absolute path"),
        ({"ca_file": ""}, "ca_file", "must not be empty"),
        ({"ca_file": 5}, "ca_file", "must be text"),
        ({"verify": "yes"}, "verify", "must be true or false"),
        ({"transport": "udp", "ca_file": "/etc/hostname"}, "ca_file", "only used with"),
    ],
)
def test_bad_tls_settings_are_refused_with_the_key(
    changes: dict[str, Any], where: str, reason: str
) -> None:
    error = field_error(tls_trunk(**changes))
    assert error.key_path == ("trunks", 0, where)
    assert reason in str(error)


def test_a_file_that_is_no_certificate_is_refused(tmp_path: Path, ca: TestCa) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    error = field_error(tls_trunk(ca_file=str(junk)))
    assert error.key_path == ("trunks", 0, "ca_file")
    assert "holds no" in str(error)
    error = field_error(tls_trunk(ca_file=str(tmp_path)))
    assert "directory" in str(error)
    error = field_error(tls_trunk(ca_file=str(ca.ca_file), verify=False))
    assert error.key_path == ("trunks", 0, "ca_file")
    assert "verify: false" in str(error)


def test_the_listener_section(tmp_path: Path, ca: TestCa) -> None:
    files = ca.issue(tmp_path / "server")
    config = config_from_mapping(
        base(tls={"certificate": str(files.certificate), "key": str(files.key), "port": 5071})
    )
    assert config.tls is not None
    assert (config.tls.certificate, config.tls.key, config.tls.port) == (
        str(files.certificate),
        str(files.key),
        5071,
    )
    assert config.to_mapping()["tls"]["port"] == 5071
    assert config_from_mapping(base()).tls is None
    cases = [
        ({"key": str(files.key)}, ("tls", "certificate"), "required"),
        ({"certificate": "server.pem"}, ("tls", "certificate"), "absolute path"),
        ({"certificate": str(tmp_path / "x.pem")}, ("tls", "certificate"), "no such file"),
        (
            {"certificate": str(files.certificate), "key": str(ca.ca_file)},
            ("tls", "key"),
            "cannot be used",
        ),
        ({"certificate": str(files.certificate), "port": 5060}, ("tls", "port"), "sip.port"),
        ({"certificate": str(files.certificate), "pot": 1}, ("tls", "pot"), "unknown key"),
    ]
    for section, where, reason in cases:
        error = field_error(base(tls=section))
        assert error.key_path == where, section
        assert reason in str(error), (section, str(error))


# -- what goes on the wire ------------------------------------------------------------------------


def test_the_register_names_tls_in_via_and_contact() -> None:
    h = harness(transport=TrunkTransport.TLS, port=5061)
    h.registration.start()
    sent = h.sender.last
    assert sent.kind is TransportKind.TLS
    assert sent.destination == Address("sip.example", 5061)
    assert sent.request.top_via.transport == "TLS"
    assert sent.request.headers.get("Contact") == "<sip:4930@192.0.2.5:5070;transport=tls>"
    assert str(sent.request.uri) == "sip:sip.example:5061"


def test_the_register_names_our_tls_listener_port_when_there_is_one() -> None:
    h = harness(transport=TrunkTransport.TLS, port=5061)
    registration = replace_tls_port(h, 5081)
    registration.start()
    sent = h.sender.last
    assert sent.request.top_via.port == 5081
    assert sent.request.headers.get("Contact") == "<sip:4930@192.0.2.5:5081;transport=tls>"


def replace_tls_port(h: Any, port: int) -> Any:
    return TrunkRegistration(
        h.registration.trunk,
        sender=h.sender,
        clock=h.clock,
        local_host=lambda _host: "192.0.2.5",
        local_port=lambda: 5070,
        publish=h.events.append,
        tls_port=lambda: port,
    )


def test_a_refused_certificate_is_the_trunks_reason_and_backs_off() -> None:
    h = harness(transport=TrunkTransport.TLS, port=5061)
    h.registration.start()
    callback = h.sender.last.on_transport_error
    assert callback is not None
    callback(CertificateError("unable to get local issuer certificate (sip.example:5061/tls)"))
    state = h.registration.state
    assert state.status is TrunkStatus.FAILING
    assert state.failure is TrunkFailure.CERTIFICATE
    assert state.failure.value == "certificate verify failed"
    assert state.detail.startswith("unable to get local issuer certificate")
    assert h.last_event.retry_in == 30
    h.clock.advance(30)
    callback = h.sender.last.on_transport_error
    assert callback is not None
    callback(CertificateError("Hostname mismatch (sip.example:5061/tls)"))
    assert h.registration.state.failures == 2
    assert h.last_event.retry_in == 60  # the usual back-off, never a burst


def test_outbound_calls_go_over_tls() -> None:
    config = config_from_mapping(
        tls_trunk() | {"dialplan": {"routes": [{"prefix": "0", "trunk": "provider"}]}}
    )
    target = TrunkEgress(lambda: config).plan("0301234", "alice", internal=False)
    assert isinstance(target, OutboundTarget)
    assert target.kind is TransportKind.TLS
    assert target.destination == Address("sip.provider.example", 5061)


def test_a_tls_trunk_is_recognised_only_over_tls() -> None:
    trunk = Trunk("p", "127.0.0.1", "u", "pw", port=5061, transport=TrunkTransport.TLS)
    config = replace(
        config_from_mapping(base()), trunking=Trunking((trunk,), DialPlan(emergency_trunk="p"))
    )
    ingress = TrunkIngress(lambda: config)
    local = Address("127.0.0.1", 5060)
    remote = Address("127.0.0.1", 5061)
    assert ingress.trunk_for(Source(TransportKind.TLS, remote, local, 3)) is not None
    # Clear text from the same address is not the provider: it is challenged like anyone.
    assert ingress.trunk_for(Source(TransportKind.UDP, remote, local, None)) is None
    assert ingress.trunk_for(Source(TransportKind.TCP, remote, local, 4)) is None


async def test_the_trunks_contexts_follow_the_configuration(ca: TestCa, tmp_path: Path) -> None:
    """Each TLS trunk's next hop gets its own context; changed settings close the old
    connection so that nothing keeps trusting what is no longer trusted."""
    files = ca.issue(tmp_path / "server")
    received: asyncio.Queue[object] = asyncio.Queue()
    server = TransportLayer(
        "127.0.0.1",
        0,
        lambda message, source: received.put_nowait(message),
        tls_context=server_context(str(files.certificate), str(files.key)),
        tls_port=0,
    )
    client = TransportLayer("127.0.0.1", 0, lambda message, source: None)
    await server.start()
    await client.start()
    try:
        assert server.tls_address is not None
        port = server.tls_address.port
        trunk = Trunk(
            "p", "localhost", "u", "pw", port=port, transport=TrunkTransport.TLS,
            ca_file=str(ca.ca_file),
        )  # fmt: skip
        clients = TrunkTlsClients(client)
        clients.apply([trunk])
        client.send_request(_request(1), Address("localhost", port), TransportKind.TLS)
        await asyncio.wait_for(received.get(), 5)
        assert client.connection_count == 1
        clients.apply([replace(trunk, ca_file=None, verify=False)])
        await asyncio.sleep(0.1)
        assert client.connection_count == 0  # closed: made under the old settings
        clients.apply([])
        failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
        client.send_request(
            _request(1),
            Address("localhost", port),
            TransportKind.TLS,
            on_failure=failed.set_result,
        )
        error = await asyncio.wait_for(failed, 5)
        assert isinstance(error, CertificateError)  # back to the system's trust
    finally:
        await client.stop()
        await server.stop()
    assert client_context(verify=False).check_hostname is False


def test_a_registered_tls_trunk_sends_keepalives_on_its_connection() -> None:
    h = harness(transport=TrunkTransport.TLS, port=5061)
    pings: list[tuple[Address, TransportKind]] = []
    registration = TrunkRegistration(
        h.registration.trunk,
        sender=h.sender,
        clock=h.clock,
        local_host=lambda _host: "192.0.2.5",
        local_port=lambda: 5070,
        publish=h.events.append,
        keepalive=lambda address, kind: pings.append((address, kind)),
    )
    registration.start()
    h.clock.advance(KEEPALIVE_INTERVAL * 2)
    assert pings == []  # not registered: nothing to keep
    h.sender.answer(200, ("Contact", "<sip:4930@192.0.2.5:5070;transport=tls>;expires=3600"))
    h.clock.advance(KEEPALIVE_INTERVAL * 3)
    assert pings == [(Address("sip.example", 5061), TransportKind.TLS)] * 3
    registration.stop()
    h.clock.advance(KEEPALIVE_INTERVAL * 3)
    assert len(pings) == 3


def test_a_udp_trunk_sends_no_keepalives() -> None:
    h = harness()
    pings: list[object] = []
    registration = TrunkRegistration(
        h.registration.trunk,
        sender=h.sender,
        clock=h.clock,
        local_host=lambda _host: "192.0.2.5",
        local_port=lambda: 5070,
        publish=h.events.append,
        keepalive=lambda address, kind: pings.append(address),
    )
    registration.start()
    h.sender.answer(200, ("Contact", "<sip:4930@192.0.2.5:5070>;expires=3600"))
    h.clock.advance(KEEPALIVE_INTERVAL * 3)
    assert registration.registered
    assert pings == []
