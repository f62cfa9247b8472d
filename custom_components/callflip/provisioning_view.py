"""The HTTP view adopted phones fetch their configuration file from.

A phone cannot log in to Home Assistant, so the view needs no authentication: the one-time
token in the path is the secret, bound to the phone's MAC address and IP address and spent on
the first fetch (``sip_core.provisioning.Provisioner.fetch`` decides; anything it refuses is a
plain 404 that tells a prober nothing). The password is only ever in the response body.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .const import DOMAIN

PROVISION_URL_BASE: Final = "/api/callflip/provision"


class ProvisioningView(HomeAssistantView):
    """GET /api/callflip/provision/<token>/<file>: an adopted phone's configuration, once."""

    url = PROVISION_URL_BASE + "/{token}/{name}"
    name = "api:callflip:provision"
    requires_auth = False

    async def get(self, request: web.Request, token: str, name: str) -> web.Response:
        hass: HomeAssistant = request.app[KEY_HASS]
        remote = request.remote or ""
        for entry in hass.config_entries.async_entries(DOMAIN, include_ignore=False):
            if entry.state is not ConfigEntryState.LOADED:
                continue
            found = entry.runtime_data.hub.pbx.provisioner.fetch(token, name, remote)
            if found is not None:
                return web.Response(
                    body=found.body,
                    content_type=found.content_type,
                    charset="utf-8",
                    headers={"Cache-Control": "no-store"},
                )
        return web.Response(status=404, text="not found")
