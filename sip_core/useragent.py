"""What a desk phone says about itself: manufacturer, model, firmware and MAC address.

Phones name themselves in the User-Agent header of every request, in vendor-specific shapes that
have been stable for many firmware generations, for example ``Yealink SIP-T46S 66.86.0.15``,
``snomD785/10.1.73.16``, ``Grandstream GXP2170 1.0.11.6``, ``Gigaset N510 IP PRO/42.250`` or
``Fanvil X4 2.12.1 0c383e123456``. Some append their MAC address. This module turns such a string
into a `PhoneIdentity` for the device registry and the discovery list; a string it does not know
still gives its product name and version, never an error.

It is pure text processing (layer 1): the registrar, plug-and-play discovery and Home Assistant
all call it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["PhoneIdentity", "format_mac", "normalise_mac", "parse_user_agent", "vendor_name"]

_MAC_IN_TEXT: Final = re.compile(
    r"(?<![0-9A-Fa-f])"
    r"((?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{12})"
    r"(?![0-9A-Fa-f])"
)
_HEX12: Final = re.compile(r"[0-9a-f]{12}")

#: Known vendors: the name a User-Agent (or a plug-and-play ``vendor`` parameter) starts with,
#: lower-cased, and how the manufacturer is written in the device registry.
_VENDORS: Final[tuple[tuple[str, str], ...]] = (
    ("yealink", "Yealink"),
    ("snom", "Snom"),
    ("grandstream", "Grandstream"),
    ("gigaset", "Gigaset"),
    ("panasonic", "Panasonic"),
    ("fanvil", "Fanvil"),
    ("akuvox", "Akuvox"),
    ("audc", "AudioCodes"),
    ("audiocodes", "AudioCodes"),
    ("polycom", "Poly"),
    ("poly", "Poly"),
    ("cisco", "Cisco"),
    ("linksys", "Linksys"),
    ("htek", "Htek"),
    ("aastra", "Aastra"),
    ("mitel", "Mitel"),
    ("escene", "Escene"),
    ("planet", "PLANET"),
)

# "snomD785/10.1.73.16", "snom370-SIP 8.7.5.35": the model is glued to the vendor name.
_SNOM: Final = re.compile(
    r"snom[ -]?(?P<model>[A-Za-z]*\d+[A-Za-z0-9]*)(?:-SIP)?[/ ](?P<fw>\S+)", re.IGNORECASE
)
# "AUDC-IPPhone/2.2.2" and "AUDC-IPPhone-440HD_UC_2.2.8.61" (AudioCodes)
_AUDC: Final = re.compile(
    r"AUDC-IPPhone(?:-(?P<model>[A-Za-z0-9]+))?[/_](?:[A-Za-z]+_)?(?P<fw>[\d.]+\S*)"
)
# "PolycomVVX-VVX_411-UA/5.9.0.9373"
_POLYCOM: Final = re.compile(
    r"Polycom[A-Za-z]*-(?P<model>[A-Za-z]+_\d+[A-Za-z0-9]*)-UA/(?P<fw>\S+)"
)
# "Cisco/SPA504G-7.6.2c"
_CISCO: Final = re.compile(r"Cisco/(?P<model>[A-Za-z0-9]+)-(?P<fw>\S+)")
# "Panasonic_KX-HDV130/01.133 (0080f0123456)"
_PANASONIC: Final = re.compile(r"Panasonic_(?P<model>[A-Za-z0-9-]+)/(?P<fw>\S+)")
# "Vendor Model Firmware ...": Yealink, Grandstream, Fanvil, Akuvox, Htek
# ("Grandstream HT-502  V1.1B 1.0.13.0")
_SPACED: Final = re.compile(r"(?P<vendor>[A-Za-z]+)[ _-]+(?P<rest>.+)")
# "Gigaset N510 IP PRO/42.250.00.000.000"
_SLASHED: Final = re.compile(r"(?P<product>[^/]+?)/(?P<fw>[^\s(]+)")
_VERSION: Final = re.compile(r"^[vV]?\d+(?:[._]\d+)+\S*$")


@dataclass(frozen=True, slots=True)
class PhoneIdentity:
    """Manufacturer, model, firmware and MAC (12 lower-case hex digits), each None if unknown."""

    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    mac: str | None = None

    def describe(self) -> str:
        """ "Snom D785", "Yealink", or "phone" when nothing is known (for titles and logs)."""
        parts = [part for part in (self.manufacturer, self.model) if part]
        return " ".join(parts) if parts else "phone"


def normalise_mac(text: str | None) -> str | None:
    """``00:04:13:AB:CD:EF``, ``00-04-13-ab-cd-ef`` or ``000413abcdef`` as ``000413abcdef``."""
    if not text:
        return None
    digits = re.sub(r"[:.\-\s]", "", text.strip()).lower()
    return digits if _HEX12.fullmatch(digits) else None


def format_mac(mac: str) -> str:
    """``000413abcdef`` as ``00:04:13:ab:cd:ef`` (Home Assistant's connection format)."""
    return ":".join(mac[index : index + 2] for index in range(0, 12, 2))


def find_mac(text: str) -> str | None:
    """The first MAC address written anywhere in ``text`` (normalised), if any."""
    for match in _MAC_IN_TEXT.finditer(text):
        mac = normalise_mac(match.group(1))
        # Twelve digits alone could be a serial or a build number: accept them only when they
        # look like a unicast MAC that is not all zeros.
        if mac is not None and mac != "000000000000" and not int(mac[1], 16) & 1:
            return mac
    return None


def vendor_name(text: str | None) -> str | None:
    """The manufacturer a vendor string (``snom``, ``Yealink``, ``AUDC``) stands for, if known."""
    if not text:
        return None
    lowered = text.strip().lower()
    for prefix, name in _VENDORS:
        if lowered.startswith(prefix):
            return name
    return None


def parse_user_agent(user_agent: str | None) -> PhoneIdentity:
    """Manufacturer, model, firmware and MAC from a User-Agent (or Server) header value."""
    if not user_agent:
        return PhoneIdentity()
    text = " ".join(user_agent.split())
    mac = find_mac(text)
    for pattern, known in (
        (_SNOM, "Snom"),
        (_AUDC, "AudioCodes"),
        (_POLYCOM, "Poly"),
        (_CISCO, "Cisco"),
        (_PANASONIC, "Panasonic"),
    ):
        match = pattern.match(text)
        if match is not None:
            found: str | None = match.group("model")
            if known == "Snom" and found:
                found = found.upper() if found[0].isalpha() else found
            elif known == "Poly" and found:
                found = found.replace("_", " ")
            return PhoneIdentity(known, found or None, match.group("fw"), mac)
    manufacturer = vendor_name(text)
    words = text.split()
    if manufacturer is None and len(words) >= 2 and _VERSION.match(words[1]):
        return PhoneIdentity(None, words[0], words[1].lstrip("vV"), mac)  # "baresip v2.0.0"
    slashed = _SLASHED.match(text)
    if slashed is not None:
        product = slashed.group("product").strip()
        if manufacturer is not None:
            model = product.split(None, 1)[1] if " " in product else None
            return PhoneIdentity(manufacturer, model, slashed.group("fw"), mac)
        return PhoneIdentity(None, product, slashed.group("fw"), mac)
    if manufacturer is not None:
        spaced = _SPACED.match(text)
        rest = spaced.group("rest").split() if spaced is not None else []
        words = [word for word in rest if normalise_mac(word) != mac or mac is None]
        versions = [word for word in words if _VERSION.match(word)]
        firmware = versions[-1] if versions else None
        model_words = [word for word in words if word not in versions and word != "IP"]
        model = model_words[0] if model_words else None
        return PhoneIdentity(manufacturer, model, firmware, mac)
    return PhoneIdentity(None, words[0] if words else None, None, mac)
