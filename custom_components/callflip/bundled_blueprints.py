"""The blueprints callflip ships, put where Home Assistant looks for them.

Home Assistant reads blueprints only from ``<config>/blueprints/<domain>/``; it copies its own
examples there once (when ``blueprints/automation`` does not exist yet) and never copies a custom
integration's. So callflip keeps its blueprints in ``blueprints/<domain>/`` inside the integration
(HACS installs that folder) and, after Home Assistant has started, puts each one in
``<config>/blueprints/<domain>/callflip/`` when that domain (``automation``) is loaded:

- a blueprint that is not there yet, and was never installed, is written;
- a copy the user has not changed is replaced by the newer bundled version (and automations are
  reloaded so that those using it run the new one);
- a copy the user edited, or one they deleted, is left alone.

Waiting for the start matters: creating ``blueprints/automation`` before the automation
integration's first run would stop Home Assistant from adding its own examples. What was
installed (a SHA-256 of each file) is kept in a ``Store`` to tell an untouched copy from an edit.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.start import async_at_started
from homeassistant.helpers.storage import Store
from homeassistant.util.file import write_utf8_file

from .const import DOMAIN

_LOGGER = logging.getLogger(__name__)

BUNDLED_FOLDER: Final = Path(__file__).parent / "blueprints"
"""``<domain>/<name>.yaml`` files, as they are installed under ``blueprints/<domain>/callflip/``."""
BLUEPRINT_FOLDER: Final = "blueprints"
STORAGE_VERSION: Final = 1
STORAGE_KEY: Final = f"{DOMAIN}.blueprints"

type InstalledDigests = dict[str, dict[str, str]]


@dataclass(slots=True)
class InstallReport:
    """What one installation pass did, by path relative to the blueprints folder."""

    written: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # edited by the user: left alone
    removed_by_user: list[str] = field(default_factory=list)  # deleted by the user: not restored


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def bundled_blueprints() -> dict[str, bytes]:
    """Each bundled blueprint by its path under ``blueprints/`` (``automation/callflip/x.yaml``)."""
    return {
        f"{path.parent.name}/{DOMAIN}/{path.name}": path.read_bytes()
        for path in sorted(BUNDLED_FOLDER.glob("*/*.yaml"))
    }


def blueprint_store(hass: HomeAssistant) -> Store[InstalledDigests]:
    """The record of what was installed: ``{"installed": {path: sha256}}``."""
    return Store(hass, STORAGE_VERSION, STORAGE_KEY)


def install(config_blueprints: Path, domains: set[str], installed: dict[str, str]) -> InstallReport:
    """Put the bundled blueprints of ``domains`` under ``config_blueprints`` (blocking I/O).

    ``installed`` (path -> digest of the file as written) is read and updated in place.
    """
    report = InstallReport()
    for relative, content in bundled_blueprints().items():
        if relative.split("/", 1)[0] not in domains:
            continue
        bundled = _digest(content)
        recorded = installed.get(relative)
        target = config_blueprints / relative
        if not target.exists():
            if recorded is not None:
                report.removed_by_user.append(relative)
                continue
            report.written.append(relative)
        else:
            current = _digest(target.read_bytes())
            if current == bundled:
                installed[relative] = bundled
                continue
            if recorded is None or current != recorded:
                report.kept.append(relative)
                continue
            report.updated.append(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_utf8_file(str(target), content.decode("utf-8"))
        installed[relative] = bundled
    return report


async def async_install_blueprints(hass: HomeAssistant) -> InstallReport:
    """Install the bundled blueprints of every blueprint domain that is loaded now."""
    domains = {path.name for path in BUNDLED_FOLDER.iterdir() if path.is_dir()}
    domains &= hass.config.components
    store = blueprint_store(hass)
    stored = await store.async_load()
    installed = dict(stored["installed"]) if stored else {}
    folder = Path(hass.config.path(BLUEPRINT_FOLDER))
    try:
        report = await hass.async_add_executor_job(install, folder, domains, installed)
    except OSError as err:
        # A folder that cannot be written must not break the PBX: the blueprints can still be
        # imported by hand. What was written before the error is recorded.
        _LOGGER.warning("Could not put callflip's blueprints in %s: %s", folder, err)
        await store.async_save({"installed": installed})
        return InstallReport()
    await store.async_save({"installed": installed})
    for relative in report.written + report.updated:
        _LOGGER.info("Installed the blueprint %s", relative)
    for relative in report.kept:
        _LOGGER.info(
            "Left your edited blueprint %s as it is; the bundled version is in %s",
            relative,
            BUNDLED_FOLDER,
        )
    if report.updated and "automation" in hass.config.components:
        # Automations made from an updated blueprint keep the old one until they are reloaded,
        # as after Home Assistant's own re-import of a blueprint.
        await hass.services.async_call("automation", "reload", blocking=True)
    return report


@callback
def async_setup_blueprints(hass: HomeAssistant) -> CALLBACK_TYPE:
    """Install the bundled blueprints once Home Assistant has started (now, if it has)."""

    async def _install(hass: HomeAssistant) -> None:
        await async_install_blueprints(hass)

    return async_at_started(hass, _install)
