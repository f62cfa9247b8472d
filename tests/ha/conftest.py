"""Fixtures of the Home Assistant tests: a household, free ports on 127.0.0.1, phones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from unittest.mock import PropertyMock, patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

# The hass fixture puts its own testing_config first on sys.path, which would hide ours: import the
# package now so that "custom_components" already points at this repository.
import custom_components.callflip  # noqa: F401
from custom_components.callflip.const import DOMAIN

from .callflip_testing import DOMAIN_NAME, PASSWORDS, find_free_port, household, server_data
from .sip_client import SipPhone


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load custom_components/callflip."""


@pytest.fixture(autouse=True)
def _config_dir_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's configuration folder is its own: callflip writes its blueprints there, which
    must not land in the test plugin's shared testing_config. (Set where the hass fixture reads
    it, not on hass itself: fixtures such as the recorder's must come before hass.)"""

    def own(*parts: str) -> str:
        return str(tmp_path.joinpath(*parts))

    monkeypatch.setattr("pytest_homeassistant_custom_component.common.get_test_config_dir", own)
    # Newer plugins read it through their own import, for their hass_config_dir fixture.
    monkeypatch.setattr(
        "pytest_homeassistant_custom_component.plugins.get_test_config_dir", own, raising=False
    )


@pytest.fixture(autouse=True)
def _sockets_on_loopback(socket_enabled: None) -> None:
    """The PBX opens real sockets; the plugin still refuses connections beyond 127.0.0.1."""


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Create the entities that are disabled by default (the diagnostics) enabled."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


@pytest.fixture
def sip_port() -> int:
    return find_free_port()


@pytest.fixture
def config_entry(hass: HomeAssistant, sip_port: int) -> MockConfigEntry:
    """The household's entry, added to hass but not set up."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"callflip {DOMAIN_NAME}",
        data=server_data(sip_port),
        options={"users": household()},
        entry_id="01JCALLFLIPTESTENTRY0000001",
    )
    entry.add_to_hass(hass)
    return entry


@pytest.fixture
async def loaded_entry(
    hass: HomeAssistant, config_entry: MockConfigEntry
) -> AsyncIterator[MockConfigEntry]:
    """The household's entry, set up (its PBX listening); unloaded afterwards."""
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    yield config_entry
    if (
        hass.config_entries.async_get_entry(config_entry.entry_id) is not None
        and config_entry.state is ConfigEntryState.LOADED
    ):
        await hass.config_entries.async_unload(config_entry.entry_id)
        await hass.async_block_till_done()


@pytest.fixture
def make_phone(sip_port: int) -> Iterator[Callable[..., SipPhone]]:
    """Make phones for accounts of the household; they are closed after the test."""
    phones: list[SipPhone] = []

    def make(username: str, password: str | None = None, port: int | None = None) -> SipPhone:
        phone = SipPhone(
            port=port or sip_port,
            username=username,
            password=password if password is not None else PASSWORDS[username],
            domain=DOMAIN_NAME,
        )
        phones.append(phone)
        return phone

    yield make
    for phone in phones:
        phone.close()
