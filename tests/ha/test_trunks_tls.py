"""TLS trunks in Home Assistant: the transport and CA file fields of the trunk options (each
refusal on its field, translated), the trunk state sensor showing a refused certificate with
its reason, and the diagnostics keeping the password out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.callflip.const import DOMAIN
from custom_components.callflip.trunk_sensor import trunk_unique_id
from sip_core.config import SecuritySettings, config_from_mapping
from sip_core.pbx import Pbx
from sip_core.trunk.config import TrunkTransport
from sip_core.trunk.registration import Backoff
from tests.tls_certs import TestCa

from .callflip_testing import DOMAIN_NAME, find_free_port, household, server_data
from .test_trunks import (
    GOOD_TRUNK,
    PROVIDER_PASSWORD,
    STRINGS,
    _add_trunk,
    _trunk_menu,
    _until,
    stored_trunk,
)

ENTRY_ID = "01JCALLFLIPTLSTRUNKENTRY01"


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa.create(tmp_path / "ca")


async def test_a_tls_trunk_with_a_ca_file_is_stored_and_applied(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    loaded_entry: MockConfigEntry,
    ca: TestCa,
) -> None:
    result = await _trunk_menu(hass, loaded_entry, "add_trunk")
    schema = result["data_schema"].schema
    transport = next(key for key in schema if key == "transport")
    assert schema[transport].config["options"] == ["udp", "tcp", "tls"]
    result = await _add_trunk(
        hass, loaded_entry, transport="tls", port=5061, ca_file=f" {ca.ca_file} "
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    (stored,) = loaded_entry.options["trunks"]
    assert stored["transport"] == "tls"
    assert stored["ca_file"] == str(ca.ca_file)
    assert stored["verify"] is True
    await hass.async_block_till_done()
    pbx = loaded_entry.runtime_data.hub.pbx
    assert pbx.config.trunking is not None
    trunk = pbx.config.trunking.trunks[0]
    assert trunk.transport is TrunkTransport.TLS
    assert trunk.ca_file == str(ca.ca_file)
    assert trunk.verify is True
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, loaded_entry)
    assert PROVIDER_PASSWORD not in json.dumps(diagnostics)
    (shown,) = diagnostics["options"]["trunks"]
    assert shown["password"] == "**REDACTED**"
    assert shown["transport"] == "tls"


async def test_verification_can_be_turned_off_for_a_tls_trunk(
    hass: HomeAssistant, loaded_entry: MockConfigEntry
) -> None:
    result = await _add_trunk(hass, loaded_entry, transport="tls", verify=False)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    (stored,) = loaded_entry.options["trunks"]
    assert stored["verify"] is False
    assert "ca_file" not in stored


@pytest.fixture
def ca_files(ca: TestCa, tmp_path: Path) -> dict[str, str]:
    """Files a form may name: the test's CA, a file that is no certificate, a directory."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    return {"CA": str(ca.ca_file), "JUNK": str(junk), "DIRECTORY": str(tmp_path)}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"transport": "tls", "ca_file": "/nonexistent/provider-ca.pem"}, "invalid_ca_file"),
        ({"transport": "tls", "ca_file": "provider-ca.pem"}, "invalid_ca_file"),
        ({"transport": "tls", "ca_file": "JUNK"}, "invalid_ca_file"),
        ({"transport": "tls", "ca_file": "DIRECTORY"}, "invalid_ca_file"),
        ({"transport": "udp", "ca_file": "CA"}, "ca_file_needs_tls"),
        ({"transport": "tcp", "ca_file": "CA"}, "ca_file_needs_tls"),
        ({"transport": "tls", "ca_file": "CA", "verify": False}, "ca_file_without_verify"),
    ],
)
async def test_every_tls_field_error(
    hass: HomeAssistant,
    loaded_entry: MockConfigEntry,
    ca_files: dict[str, str],
    changes: dict[str, Any],
    error: str,
) -> None:
    files = ca_files
    changes = {k: files.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    result = await _add_trunk(hass, loaded_entry, **changes)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"ca_file": error}
    assert result["description_placeholders"]["error"]  # sip_core's reason, in the text
    assert error in STRINGS["options"]["error"]
    assert "trunks" not in loaded_entry.options  # nothing was stored


def test_the_tls_texts_are_translated() -> None:
    trunk = STRINGS["options"]["step"]["trunk"]
    assert {"ca_file", "verify"} <= set(trunk["data"])
    assert {"ca_file", "verify"} <= set(trunk["data_description"])
    assert STRINGS["selector"]["trunk_transport"]["options"]["tls"] == "TLS"
    assert "tls" in STRINGS["entity"]["sensor"]["transport"]["state"]
    for key in ("invalid_ca_file", "ca_file_needs_tls", "ca_file_without_verify"):
        assert key in STRINGS["options"]["error"]
    english = json.loads(
        (Path(__file__).parents[2] / "custom_components/callflip/translations/en.json").read_text()
    )
    assert (
        english["options"]["error"]["invalid_ca_file"]
        == (STRINGS["options"]["error"]["invalid_ca_file"])
    )


# -- the state sensor, with a second PBX as a TLS provider ----------------------------------------


@pytest.fixture
async def tls_provider(ca: TestCa, tmp_path: Path) -> AsyncIterator[Pbx]:
    """A second sip_core PBX listening for TLS with a certificate from the test's CA.

    It shares Home Assistant's event loop, which the test plugin runs in asyncio's debug mode;
    there asyncio reports every incoming handshake the client broke off (as our trunk does with
    a certificate it refuses) to the loop's exception handler, which fails the test. Outside
    debug mode asyncio drops such connections quietly, as the runner does, so the provider's
    accepting is done outside debug mode here.
    """
    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    loop.set_debug(False)
    files = ca.issue(tmp_path / "provider")
    config = config_from_mapping(
        {
            "sip": {"listen": "127.0.0.1", "port": find_free_port(), "domain": "provider.test"},
            "rtp": {"ports": "44100-44199"},
            "users": [
                {
                    "name": "Line",
                    "extension": "100",
                    "devices": [{"username": "4930", "password": PROVIDER_PASSWORD}],
                }
            ],
            "tls": {"certificate": str(files.certificate), "key": str(files.key), "port": 0},
        }
    )
    config = replace(config, security=SecuritySettings(never_ban=("127.0.0.0/8",)))
    pbx = Pbx(config)
    await pbx.start()
    try:
        yield pbx
    finally:
        await pbx.stop()
        loop.set_debug(debug)


async def test_a_refused_certificate_shows_on_the_trunk_sensor(
    hass: HomeAssistant, sip_port: int, tls_provider: Pbx, ca: TestCa, tmp_path: Path
) -> None:
    """Trusting another CA: failing with "certificate verify failed" and OpenSSL's reason;
    with the provider's CA in the options, registered over TLS."""
    assert tls_provider.tls_address is not None
    port = tls_provider.tls_address.port
    impostor = TestCa.create(tmp_path / "impostor", "impostor CA")
    trunk = stored_trunk(port, PROVIDER_PASSWORD, transport="tls", ca_file=str(impostor.ca_file))
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"callflip {DOMAIN_NAME}",
        data=server_data(sip_port),
        options={"users": household(), "trunks": [trunk]},
        entry_id=ENTRY_ID,
    )
    entry.add_to_hass(hass)
    with patch("sip_core.trunk.registration.BACKOFF", Backoff(0.3, 0.3)):
        assert await hass.config_entries.async_setup(entry.entry_id)
        entity_id = er.async_get(hass).async_get_entity_id(
            "sensor", DOMAIN, trunk_unique_id(ENTRY_ID, "t-provider")
        )
        assert entity_id is not None
        await _until(
            hass,
            lambda: (s := hass.states.get(entity_id)) is not None and s.state == "failing",
            "the trunk to fail",
        )
        state = hass.states.get(entity_id)
        assert state is not None
        assert state.attributes["reason"] == "certificate verify failed"
        assert "unable to get local issuer certificate" in state.attributes["detail"]
        assert tls_provider.bindings() == []

        result = await _trunk_menu(hass, entry, "edit_trunk")
        result = await hass.config_entries.options.async_configure(
            result["flow_id"], {"trunk": "t-provider"}
        )
        fields = {k: v for k, v in trunk.items() if k in GOOD_TRUNK}
        fields |= {"transport": "tls", "ca_file": str(ca.ca_file)}
        result = await hass.config_entries.options.async_configure(result["flow_id"], fields)
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        await _until(
            hass,
            lambda: (s := hass.states.get(entity_id)) is not None and s.state == "registered",
            "the trunk to register",
        )
        (binding,) = tls_provider.bindings()
        assert binding.username == "4930"
        assert binding.source.kind.value == "TLS"
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
