"""What hassfest and the HACS validation check in the public repository, checked here too.

The release version lives in pyproject.toml alone; the integration's manifest repeats it twice (its
own ``version`` and the pin of the ``sip_core`` distribution Home Assistant installs), and these
tests keep the three equal. The rest mirrors the hassfest and HACS checks that matter for a custom
integration: the manifest's keys, values and key order, hacs.json, services and their
translations and icons, translation key syntax, brand images.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from awesomeversion import AwesomeVersion, AwesomeVersionStrategy
from packaging.requirements import Requirement

from custom_components.callflip.const import DOMAIN

REPO = Path(__file__).resolve().parents[2]
COMPONENT = REPO / "custom_components" / "callflip"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
MANIFEST: dict[str, Any] = json.loads((COMPONENT / "manifest.json").read_text())
HACS: dict[str, Any] = json.loads((REPO / "hacs.json").read_text())
STRINGS: dict[str, Any] = json.loads((COMPONENT / "strings.json").read_text())
SERVICES: dict[str, Any] = yaml.safe_load((COMPONENT / "services.yaml").read_text())
ICONS: dict[str, Any] = json.loads((COMPONENT / "icons.json").read_text())

# hassfest: the manifest keys a custom integration may have (see Home Assistant's manifest schema).
MANIFEST_KEYS = {
    "domain", "name", "after_dependencies", "bluetooth", "codeowners", "config_flow",
    "dependencies", "dhcp", "disabled", "documentation", "homekit", "import_executor",
    "integration_type", "iot_class", "issue_tracker", "loggers", "mqtt", "quality_scale",
    "requirements", "single_config_entry", "ssdp", "usb", "version", "zeroconf",
}  # fmt: skip
IOT_CLASSES = {
    "assumed_state", "calculated", "cloud_polling", "cloud_push", "local_polling", "local_push",
}  # fmt: skip
INTEGRATION_TYPES = {"device", "entity", "hardware", "helper", "hub", "service", "system"}
# HACS: the keys hacs.json may have.
HACS_KEYS = {
    "name", "content_in_root", "zip_release", "filename", "hide_default_branch", "country",
    "homeassistant", "persistent_directory", "render_readme", "hacs",
}  # fmt: skip
TRANSLATION_KEY = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
# The oldest Home Assistant the suite runs on (scripts/setup's .venv).
OLDEST_TESTED = "2025.4.4"


def test_one_version_everywhere() -> None:
    """pyproject.toml's version is the manifest's version and the pin Home Assistant installs."""
    version = PYPROJECT["project"]["version"]
    (requirement,) = (Requirement(text) for text in MANIFEST["requirements"])
    assert requirement.name == PYPROJECT["project"]["name"] == "callflip-sip-core"
    assert str(requirement.specifier) == f"=={version}"
    assert MANIFEST["version"] == version


def test_distribution_and_manifest_point_at_the_same_project() -> None:
    urls = PYPROJECT["project"]["urls"]
    assert urls["Homepage"] == MANIFEST["documentation"]
    assert urls["Issues"] == MANIFEST["issue_tracker"]


def test_version_is_what_home_assistant_accepts() -> None:
    """Home Assistant refuses to load a custom integration whose version it cannot parse."""
    assert AwesomeVersion(MANIFEST["version"]).strategy in {
        AwesomeVersionStrategy.SEMVER,
        AwesomeVersionStrategy.SIMPLEVER,
        AwesomeVersionStrategy.CALVER,
        AwesomeVersionStrategy.PEP440,
    }


def test_manifest_keys_values_and_order() -> None:
    assert MANIFEST["domain"] == DOMAIN == COMPONENT.name
    keys = list(MANIFEST)
    # hassfest sorts: domain, name, then the rest alphabetically.
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:])
    assert set(keys) <= MANIFEST_KEYS
    for required in ("codeowners", "documentation", "issue_tracker", "version", "requirements"):
        assert required in MANIFEST, required
    assert MANIFEST["iot_class"] in IOT_CLASSES
    assert MANIFEST["integration_type"] in INTEGRATION_TYPES
    assert MANIFEST["config_flow"] is True
    assert all(owner.startswith("@") for owner in MANIFEST["codeowners"])
    for url in (MANIFEST["documentation"], MANIFEST["issue_tracker"]):
        assert url.startswith("https://"), url
    # Requirements are pinned exactly, as Home Assistant installs them.
    for text in MANIFEST["requirements"]:
        assert str(Requirement(text).specifier).startswith("=="), text
    # The loggers are the packages the integration logs through (sip_core is ours).
    assert "sip_core" in MANIFEST["loggers"]


def test_hacs_json() -> None:
    assert set(HACS) <= HACS_KEYS
    assert HACS["name"]
    # The minimum Home Assistant HACS offers the integration to is one the tests run on.
    assert AwesomeVersion(HACS["homeassistant"]) <= AwesomeVersion(OLDEST_TESTED)
    assert HACS["homeassistant"].rsplit(".", 1)[0] == OLDEST_TESTED.rsplit(".", 1)[0]
    # HACS installs a repository with exactly one integration under custom_components.
    assert [path.name for path in (REPO / "custom_components").iterdir()] == [DOMAIN]
    assert not HACS.get("content_in_root", False)
    assert not HACS.get("zip_release", False)


def test_python_requirement_matches_the_oldest_home_assistant() -> None:
    """Home Assistant 2025.4 runs on Python 3.13: the distribution must install there."""
    assert PYPROJECT["project"]["requires-python"] == ">=3.13"


def test_licence_is_declared_and_shipped() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


def test_services_have_translations_and_icons() -> None:
    """hassfest: every action and field in services.yaml is named and described in strings."""
    assert set(SERVICES) == set(STRINGS["services"]) == set(ICONS["services"])
    for service, spec in SERVICES.items():
        text = STRINGS["services"][service]
        assert text["name"]
        assert text["description"]
        fields = set((spec or {}).get("fields", {}))
        assert fields == set(text.get("fields", {})), service
        for field in fields:
            assert text["fields"][field]["name"]
            assert text["fields"][field]["description"]
        assert ICONS["services"][service]["service"].startswith("mdi:")


def _keys(node: Any, path: str = "") -> list[tuple[str, str]]:
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        found.append((path, key))
        found += _keys(value, f"{path}/{key}")
    return found


@pytest.mark.parametrize("name", ["strings.json", "icons.json"])
def test_translation_keys_are_lowercase_snake_case(name: str) -> None:
    """hassfest refuses translation keys other than lowercase words joined by underscores."""
    data = json.loads((COMPONENT / name).read_text())
    # Below "data" and "state", keys are field names and states, which follow the same rule here.
    bad = [f"{path}/{key}" for path, key in _keys(data) if not TRANSLATION_KEY.match(key)]
    assert bad == []


def test_icons_name_only_translated_entities() -> None:
    for platform, entities in ICONS["entity"].items():
        assert set(entities) <= set(STRINGS["entity"][platform]), platform


BRAND_SIZES = {
    "icon.png": (256, 256),
    "icon@2x.png": (512, 512),
    "logo.png": (None, 128),
    "logo@2x.png": (None, 256),
    "dark_logo.png": (None, 128),
    "dark_logo@2x.png": (None, 256),
}


def test_brand_images() -> None:
    """Home Assistant (2026.3 and later) shows these; the sizes are the brands repository's."""
    from PIL import Image

    brand = COMPONENT / "brand"
    assert {path.name for path in brand.iterdir()} == set(BRAND_SIZES)
    for name, (width, height) in BRAND_SIZES.items():
        with Image.open(brand / name) as image:
            assert image.format == "PNG"
            assert image.mode == "RGBA", name
            assert image.height == height, name
            if width is not None:
                assert image.width == width, name
            else:
                assert image.width > image.height, name  # a landscape logo
            # Transparent around the drawing, as the brands rules ask.
            assert image.getpixel((0, 0))[3] == 0, name


def test_brand_images_come_from_the_script(tmp_path: Path) -> None:
    """scripts/make-brand draws what is committed (up to Pillow's resampling rounding)."""
    import subprocess
    import sys

    from PIL import Image, ImageChops, ImageStat

    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make-brand"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in BRAND_SIZES:
        with (
            Image.open(COMPONENT / "brand" / name) as committed,
            Image.open(tmp_path / name) as new,
        ):
            assert committed.size == new.size, name
            difference = ImageChops.difference(committed, new)
            assert max(ImageStat.Stat(difference).mean) < 0.5, name


# The rules of Home Assistant's integration quality scale (all tiers), as core integrations list
# them in their quality_scale.yaml.
QUALITY_RULES = {
    # Bronze
    "action-setup", "appropriate-polling", "brands", "common-modules",
    "config-flow-test-coverage", "config-flow", "dependency-transparency", "docs-actions",
    "docs-high-level-description", "docs-installation-instructions", "docs-removal-instructions",
    "entity-event-setup", "entity-unique-id", "has-entity-name", "runtime-data",
    "test-before-configure", "test-before-setup", "unique-config-entry",
    # Silver
    "action-exceptions", "config-entry-unloading", "docs-configuration-parameters",
    "docs-installation-parameters", "entity-unavailable", "integration-owner",
    "log-when-unavailable", "parallel-updates", "reauthentication-flow", "test-coverage",
    # Gold
    "devices", "diagnostics", "discovery-update-info", "discovery", "docs-data-update",
    "docs-examples", "docs-known-limitations", "docs-supported-devices",
    "docs-supported-functions", "docs-troubleshooting", "docs-use-cases", "dynamic-devices",
    "entity-category", "entity-device-class", "entity-disabled-by-default",
    "entity-translations", "exception-translations", "icon-translations", "reconfiguration-flow",
    "repair-issues", "stale-devices",
    # Platinum
    "async-dependency", "inject-websession", "strict-typing",
    # Documentation of automation building blocks
    "docs-conditions", "docs-triggers",
}  # fmt: skip
PLATFORM_MODULES = ("binary_sensor.py", "button.py", "event.py", "sensor.py")


def _quality() -> dict[str, dict[str, str]]:
    rules = yaml.safe_load((COMPONENT / "quality_scale.yaml").read_text())["rules"]
    return {
        name: value if isinstance(value, dict) else {"status": value}
        for name, value in rules.items()
    }


def test_quality_scale_lists_every_rule_with_a_status() -> None:
    rules = _quality()
    assert set(rules) == QUALITY_RULES
    for name, rule in rules.items():
        assert rule["status"] in {"done", "exempt", "todo"}, name
        if rule["status"] != "done":
            # An exemption or an open rule says why.
            assert len(rule.get("comment", "")) > 20, name


def _source(name: str) -> str:
    return (COMPONENT / name).read_text()


def test_quality_scale_claims_hold_in_the_code() -> None:
    """The rules that can be read off the code: a 'done' that the code contradicts fails."""
    done = {name for name, rule in _quality().items() if rule["status"] == "done"}
    checks = {
        "action-setup": "async_setup_services(hass)"
        in _source("__init__.py").split("async def async_setup_entry")[0],
        "brands": (COMPONENT / "brand" / "icon.png").is_file(),
        "config-flow": MANIFEST["config_flow"] is True,
        "diagnostics": "async_get_config_entry_diagnostics" in _source("diagnostics.py"),
        "has-entity-name": "_attr_has_entity_name = True" in _source("entity.py"),
        "integration-owner": bool(MANIFEST["codeowners"]),
        "parallel-updates": all(
            "PARALLEL_UPDATES = " in _source(module) for module in PLATFORM_MODULES
        ),
        "reconfiguration-flow": "async_step_reconfigure" in _source("config_flow.py"),
        "repair-issues": "ir.async_create_issue" in _source("issues.py")
        and "async_create_fix_flow" in _source("repairs.py"),
        "runtime-data": "entry.runtime_data = " in _source("__init__.py"),
        "stale-devices": "async_remove_config_entry_device" in _source("__init__.py"),
        "unique-config-entry": MANIFEST.get("single_config_entry") is True
        or '"single_instance_allowed"' in _source("config_flow.py"),
        "entity-disabled-by-default": any(
            "entity_registry_enabled_default=False" in _source(module)
            for module in PLATFORM_MODULES
        ),
        "exception-translations": bool(STRINGS["exceptions"]),
        "icon-translations": bool(ICONS["entity"]),
        "strict-typing": PYPROJECT["tool"]["mypy"]["strict"] is True
        and (REPO / "sip_core" / "py.typed").is_file(),
    }
    contradicted = sorted(name for name, holds in checks.items() if name in done and not holds)
    assert contradicted == []
    # Discovery is exempt exactly while the manifest names nothing to discover.
    discovers = bool(
        {"bluetooth", "dhcp", "homekit", "mqtt", "ssdp", "usb", "zeroconf"} & set(MANIFEST)
    )
    assert (_quality()["discovery"]["status"] == "done") is discovers
    # The rules this integration has closed must stay closed.
    assert {"repair-issues", "diagnostics", "reconfiguration-flow", "brands"} <= done
