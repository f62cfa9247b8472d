"""Run the PBX on its own: ``python -m sip_core --config pbx.yaml``.

The runner is deliberately thin: it reads the configuration, starts the same :class:`Pbx` that
Home Assistant embeds, and turns the two errors a person can fix (a bad file, a port in use) into
one clear line and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sip_core import __version__
from sip_core.config import ConfigError, load_config
from sip_core.pbx import Pbx
from sip_core.phones import DiscoveredPhone
from sip_core.provision_http import PROVISION_PATH, ProvisioningServer
from sip_core.transport import TransportError
from sip_core.workers import WorkerPool

_LOGGER = logging.getLogger("sip_core")

EXIT_USAGE = 2

GC_THRESHOLD = (20_000, 10, 10)
"""The runner's garbage-collector thresholds (gc.set_threshold), set once the PBX has started.

A registration allocates a few hundred container objects (parsed messages, header views) that
die young, almost all by reference counting. With the default first threshold of 2,000 the
collector ran every few registrations and each run also ages the survivors towards the older
generations, whose collections traverse every live transaction and binding. Ten times fewer
young collections cost a little memory (garbage cycles live a bit longer) and a measured ~20%
of the CPU per registration. Only the runner does this: Home Assistant owns its own process
and its collector settings, so the library never touches them.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sip_core",
        description="callflip's PBX: registrar, B2BUA and call flip on one SIP port.",
    )
    parser.add_argument("--config", required=True, type=Path, help="the PBX's YAML configuration")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="overrides log_level from the configuration (default: info)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


async def _serve(pbx: Pbx, workers: WorkerPool | None) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly so bindings and ports are released."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await pbx.start()
    provisioning = await _start_discovery(pbx)
    if workers is not None:
        try:
            await workers.start()
        except BaseException:
            await workers.stop()
            await pbx.stop()
            raise
    # Everything alive now (configuration, modules, the loop) lives as long as the process. Moved
    # out of the collector's reach, it is not traversed again by every full collection, which at
    # thousands of requests a second otherwise costs a large share of the CPU.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    address = pbx.local_address
    _LOGGER.info("listening on %s:%d (udp, tcp)", address.host, address.port)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        _LOGGER.info("stopping")
        if workers is not None:
            await workers.stop()
        if provisioning is not None:
            await provisioning.stop()
        await pbx.stop()


async def _start_discovery(pbx: Pbx) -> ProvisioningServer | None:
    """Log the phones plug-and-play finds; serve the files of those ``discovery.provision``
    names (each is answered at its next boot, once)."""
    settings = pbx.config.discovery
    provision = dict(settings.provision)

    def log_phone(phone: DiscoveredPhone, new: bool) -> None:
        if not new:
            return
        if phone.mac and phone.mac in provision:
            _LOGGER.info(
                "phone %s (MAC %s) will be provisioned as %s",
                phone.describe(),
                phone.mac,
                provision[phone.mac],
            )
        elif phone.mac:
            _LOGGER.info(
                "phone %s (MAC %s) found; to provision it, add it under discovery.provision",
                phone.describe(),
                phone.mac,
            )

    pbx.phones.subscribe(log_phone)
    if not provision:
        return None
    server = ProvisioningServer(pbx.provisioner, pbx.config.sip.listen, settings.http_port)
    try:
        await server.start()
    except OSError as err:
        _LOGGER.warning(
            "cannot serve provisioning files on port %d (%s): no phone will be provisioned",
            settings.http_port,
            err.strerror or err,
        )
        return None
    pbx.set_provisioning_url(f"http://{{host}}:{server.port}{PROVISION_PATH}")
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m sip_core`` and the ``callflip-pbx`` script."""
    args = _parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"callflip: {err}", file=sys.stderr)
        return EXIT_USAGE
    level = (args.log_level or config.log_level or "info").upper()
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    workers: WorkerPool | None = None
    if config.sip.workers > 0:
        secret = WorkerPool.new_secret()
        pbx = Pbx(config, digest_secret=secret)
        workers = WorkerPool(pbx, args.config, config.sip.workers, secret, level.lower())
    else:
        pbx = Pbx(config)
    try:
        asyncio.run(_serve(pbx, workers))
    except TransportError as err:
        print(f"callflip: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        with contextlib.suppress(Exception):
            _LOGGER.info("interrupted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
