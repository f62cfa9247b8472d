"""The config flow: server settings, every error, a single instance, reconfigure."""

from __future__ import annotations

import errno
import socket
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.callflip.config_flow import probe_bind
from custom_components.callflip.const import DOMAIN
from sip_core.config import ConfigError

from .callflip_testing import DOMAIN_NAME, RTP_PORT_MIN, find_free_port, server_data


async def _start(hass: HomeAssistant) -> str:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return str(result["flow_id"])


async def test_user_flow_creates_entry(hass: HomeAssistant, sip_port: int) -> None:
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {**server_data(sip_port), "listen": " 127.0.0.1 ", "port": float(sip_port)}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"callflip {DOMAIN_NAME}"
    assert result["data"] == server_data(sip_port)
    assert isinstance(result["data"]["port"], int)
    assert result["options"] == {"users": []}
    entry = result["result"]
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.hub.pbx.local_address.port == sip_port
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"listen": "pbx.example"}, {"listen": "invalid_address"}),
        ({"listen": "192.0.2.1"}, {"listen": "address_not_available"}),
        ({"port": 70000}, {"port": "port_out_of_range"}),
        ({"port": 0}, {"port": "port_out_of_range"}),
        ({"port": 5060.5}, {"port": "port_out_of_range"}),
        ({"rtp_port_min": -2}, {"rtp_port_min": "rtp_port_out_of_range"}),
        ({"rtp_port_min": 1000}, {"rtp_port_min": "rtp_port_out_of_range"}),
        ({"rtp_port_max": 65536}, {"rtp_port_max": "rtp_port_out_of_range"}),
        ({"rtp_port_min": 42001}, {"rtp_port_min": "rtp_port_odd"}),
        ({"domain": "bad domain"}, {"domain": "invalid_domain"}),
        ({"domain": "-bad.example"}, {"domain": "invalid_domain"}),
        ({"rtp_port_min": 43000, "rtp_port_max": 42000}, {"rtp_port_max": "invalid_rtp_range"}),
        ({"rtp_port_min": 42000, "rtp_port_max": 42000}, {"rtp_port_max": "invalid_rtp_range"}),
        ({"port": RTP_PORT_MIN + 100}, {"port": "port_in_rtp_range"}),
    ],
)
async def test_user_flow_field_errors(
    hass: HomeAssistant, sip_port: int, changes: dict[str, Any], errors: dict[str, str]
) -> None:
    flow_id = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {**server_data(sip_port), **changes}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors
    # The user fixes the mistake in the same dialog and the entry is created.
    result = await hass.config_entries.flow.async_configure(flow_id, server_data(sip_port))
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(result["result"].entry_id)


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
async def test_user_flow_port_in_use(hass: HomeAssistant, sip_port: int, kind: int) -> None:
    flow_id = await _start(hass)
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", sip_port))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        result = await hass.config_entries.flow.async_configure(flow_id, server_data(sip_port))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"port": "port_in_use"}
    assert not hass.config_entries.async_entries(DOMAIN)


@pytest.mark.parametrize(
    ("code", "field", "error"),
    [
        (errno.EACCES, "port", "port_not_permitted"),
        (errno.EINVAL, "port", "cannot_bind"),
    ],
)
async def test_user_flow_other_bind_errors(
    hass: HomeAssistant, sip_port: int, code: int, field: str, error: str
) -> None:
    flow_id = await _start(hass)
    with patch("socket.socket.bind", side_effect=OSError(code, "refused")):
        result = await hass.config_entries.flow.async_configure(flow_id, server_data(sip_port))
    assert result["errors"] == {field: error}


def test_probe_bind_ipv6_loopback() -> None:
    assert probe_bind("::1", find_free_port()) is None


async def test_single_instance(hass: HomeAssistant, config_entry: MockConfigEntry) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "single_instance_allowed"


async def test_reconfigure_moves_the_server(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, sip_port: int
) -> None:
    new_port = find_free_port()
    result = await loaded_entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    # The new port is taken: a field error, the running PBX is untouched.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", new_port))
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {**server_data(new_port)}
        )
    assert result["errors"] == {"port": "port_in_use"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**server_data(new_port), "domain": "other.home.arpa"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert loaded_entry.state is ConfigEntryState.LOADED
    assert loaded_entry.data["port"] == new_port
    assert loaded_entry.title == "callflip other.home.arpa"
    assert loaded_entry.runtime_data.hub.pbx.local_address.port == new_port
    # The old port was freed by the reload.
    assert probe_bind("127.0.0.1", sip_port) is None


async def test_reconfigure_same_port_skips_probe(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, sip_port: int
) -> None:
    """The running PBX holds its own port: keeping it is not a 'port in use' error."""
    result = await loaded_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**server_data(sip_port), "rtp_port_min": 44000, "rtp_port_max": 44999}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert loaded_entry.state is ConfigEntryState.LOADED
    assert loaded_entry.data["rtp_port_min"] == 44000
    assert loaded_entry.options["users"][0]["name"] == "Alice"


async def test_reconfigure_field_error(
    hass: HomeAssistant, loaded_entry: MockConfigEntry, sip_port: int
) -> None:
    result = await loaded_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {**server_data(sip_port), "domain": "no spaces"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"domain": "invalid_domain"}


async def test_user_flow_sip_core_refusal(hass: HomeAssistant, sip_port: int) -> None:
    """Whatever sip_core refuses beyond our own checks is a form error, never a traceback."""
    flow_id = await _start(hass)
    refusal = ConfigError("a rule only sip_core knows", key_path=("sip", "domain"))
    with patch("custom_components.callflip.users.config_from_mapping", side_effect=refusal):
        result = await hass.config_entries.flow.async_configure(flow_id, server_data(sip_port))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_config"}
    assert result["description_placeholders"] == {"error": "sip.domain: a rule only sip_core knows"}
