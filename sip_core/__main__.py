"""Run the PBX on its own: ``python -m sip_core --config pbx.yaml``.

The runner is deliberately thin: it reads the configuration, starts the same :class:`Pbx` that
Home Assistant embeds, and turns the two errors a person can fix (a bad file, a port in use) into
one clear line and exit status 2 instead of a traceback.

What the PBX learns while it runs is kept in a state file (``--state``; by default
``<config name>.state.json`` beside the configuration): the registrations, the call history and
the runtime state of `sip_core.state`. It is written atomically a moment after each change and
when the runner stops, and read at start, so phones stay reachable across a restart without
registering again. SIGUSR1 logs one ``stats`` line (`Pbx.stats`, JSON) for leak checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sip_core import __version__
from sip_core.clock import Clock, CountingClock, LoopClock
from sip_core.config import ConfigError, load_config
from sip_core.events import CallRecorded, PbxEvent, RegistrationChanged
from sip_core.pbx import Pbx
from sip_core.phones import DiscoveredPhone
from sip_core.provision_http import PROVISION_PATH, ProvisioningServer
from sip_core.state import (
    RuntimeState,
    StateFile,
    StateFileError,
    call_record_to_json,
    call_records_from_json,
)
from sip_core.tls import TlsSetupError
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


SAVE_DELAY = 1.0
"""Seconds to gather changes (a burst of registrations, calls ending) into one state file write."""


class StateKeeper:
    """Saves the runner's state file a moment after each change, and once more at the end.

    Bindings and call records come from the PBX (its events say when they change), the runtime
    state from `RuntimeState` (its sections say so themselves). The snapshot is taken on the event
    loop and written in a thread, one write at a time; a change during a write schedules another.
    """

    def __init__(self, pbx: Pbx, state: RuntimeState, file: StateFile) -> None:
        self._pbx = pbx
        self._state = state
        self._file = file
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._dirty = False
        self._unsubscribe: list[Any] = []

    def start(self) -> None:
        self._unsubscribe = [
            self._pbx.subscribe(self._on_event),
            self._state.subscribe(self.request_save),
        ]

    def _on_event(self, event: PbxEvent) -> None:
        if isinstance(event, (RegistrationChanged, CallRecorded)):
            self.request_save()

    def request_save(self) -> None:
        """Save within `SAVE_DELAY` seconds."""
        self._dirty = True
        if self._timer is None and self._writing is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(SAVE_DELAY, self._write_soon)

    def snapshot(self) -> dict[str, Any]:
        return {
            "bindings": self._pbx.binding_records(),
            "history": [call_record_to_json(record) for record in self._pbx.history()],
            "state": self._state.records(),
        }

    def _write_soon(self) -> None:
        self._timer = None
        self._writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                await asyncio.to_thread(self._save, self.snapshot())
        finally:
            self._writing = None

    def _save(self, data: dict[str, Any]) -> None:
        try:
            self._file.save(data)
        except StateFileError as err:
            _LOGGER.error("%s", err)

    async def stop(self) -> None:
        """Write the final state (after the PBX has stopped and recorded its last calls)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            await self._writing
        self._save(self.snapshot())
        _LOGGER.info("saved state to %s", self._file.path)


def default_state_path(config_path: Path) -> Path:
    """``pbx.yaml`` -> ``pbx.state.json`` in the same directory."""
    return config_path.with_name(config_path.stem + ".state.json")


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
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="the state file (registrations, call history, runtime state); "
        "default: <config name>.state.json beside the configuration",
    )
    parser.add_argument(
        "--count-timers",
        action="store_true",
        help="count pending timers for the stats line (SIGUSR1); for leak checks",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _log_stats(pbx: Pbx) -> None:
    stats: dict[str, Any] = dict(pbx.stats().as_dict())
    stats["tasks"] = len(asyncio.all_tasks())
    # Asked for explicitly (SIGUSR1), so shown at every log level, also a quiet one.
    _LOGGER.warning("stats %s", json.dumps(stats, separators=(",", ":")))


async def _serve(pbx: Pbx, workers: WorkerPool | None, keeper: StateKeeper) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly so bindings and ports are released."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _log_stats, pbx)
    await pbx.start()
    keeper.start()
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
    if pbx.tls_address is not None:
        _LOGGER.info("TLS on %s:%d", pbx.tls_address.host, pbx.tls_address.port)
    _LOGGER.info("listening on %s:%d (udp, tcp)", address.host, address.port)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
        _LOGGER.info("stopping")
        if workers is not None:
            await workers.stop()
        if provisioning is not None:
            await provisioning.stop()
        await pbx.stop()
        await keeper.stop()


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
    file = StateFile(args.state if args.state is not None else default_state_path(args.config))
    saved = file.load()
    state = RuntimeState()
    state.restore(_mapping(saved.get("state")))
    clock: Clock = LoopClock()
    if args.count_timers:
        clock = CountingClock(clock)
    options: dict[str, Any] = {
        "clock": clock,
        "bindings": _list(saved.get("bindings")),
        "history": call_records_from_json(_list(saved.get("history"))),
        "state": state,
    }
    workers: WorkerPool | None = None
    try:
        if config.sip.workers > 0:
            secret = WorkerPool.new_secret()
            pbx = Pbx(config, digest_secret=secret, **options)
            workers = WorkerPool(pbx, args.config, config.sip.workers, secret, level.lower())
        else:
            pbx = Pbx(config, **options)
    except TlsSetupError as err:  # checked when loaded: the file went or changed since
        print(f"callflip: tls: {err}", file=sys.stderr)
        return EXIT_USAGE
    keeper = StateKeeper(pbx, state, file)
    try:
        asyncio.run(_serve(pbx, workers, keeper))
    except TransportError as err:
        print(f"callflip: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        with contextlib.suppress(Exception):
            _LOGGER.info("interrupted")
    return 0


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


if __name__ == "__main__":
    sys.exit(main())
