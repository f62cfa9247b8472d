"""A pjsua2 (PJSIP) phone for the interop tests, run as a peer process in its own environment.

PJSIP's Python bindings (PyPI ``pjsua2-python``) ship wheels for Python 3.11 and 3.12 only, so
this script runs under the interpreter of the environment ``scripts/setup`` builds for it
(``.venv-pjsua2``), never inside the test process. It imports nothing from the project.

One account, registered through ``--proxy`` (the PBX, as an outbound proxy) for the AOR
``sip:USER@DOMAIN``, with PJSIP's default settings except what a test machine needs: a null sound
device, loopback addresses, and, in a call, ``--tone`` played as the microphone while what the far
end sends is recorded to ``--record`` (a WAV file at 8 kHz).

Commands on standard input, one a line: ``call URI``, ``answer``, ``hangup``, ``quit``.
Events on standard output, one a line, for the test to wait on: ``ready``, ``registered CODE
REASON``, ``incoming``, ``state STATE`` (pjsip's invite session states: CALLING, EARLY,
CONFIRMED, DISCONNECTED ...), ``media active``, ``error TEXT``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import sys
import time

import pjsua2 as pj  # type: ignore[import-not-found]


def emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Phone:
    """The endpoint, its one account and its current call."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.endpoint = pj.Endpoint()
        self.endpoint.libCreate()
        config = pj.EpConfig()
        # Callbacks only from libHandleEvents in this thread: Python and pjsip's threads never mix.
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = True
        config.uaConfig.userAgent = "callflip-interop pjsua2"
        config.logConfig.level = args.log_level
        config.logConfig.consoleLevel = args.log_level
        config.medConfig.clockRate = 8000
        config.medConfig.sndClockRate = 8000
        config.medConfig.hasIoqueue = True
        self.endpoint.libInit(config)
        transport = pj.TransportConfig()
        transport.boundAddress = args.host
        transport.publicAddress = args.host
        transport.port = args.port
        self.endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        self.endpoint.libStart()
        self.endpoint.audDevManager().setNullDev()
        self.account = Account(self)
        self.call: Call | None = None
        self.player: object | None = None
        self.recorder: object | None = None
        self.running = True

    def create_account(self) -> None:
        args = self.args
        config = pj.AccountConfig()
        config.idUri = f"sip:{args.user}@{args.domain}"
        config.regConfig.registrarUri = f"sip:{args.domain}"
        config.sipConfig.proxies.append(f"sip:{args.proxy};lr")
        config.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
        )
        config.mediaConfig.transportConfig.boundAddress = args.host
        config.mediaConfig.transportConfig.publicAddress = args.host
        config.mediaConfig.transportConfig.port = args.rtp_port
        config.mediaConfig.transportConfig.portRange = 20
        self.account.create(config)

    # -- media

    def media_active(self, call: Call) -> None:
        media = call.getAudioMedia(-1)
        if self.player is None and self.args.tone:
            player = pj.AudioMediaPlayer()
            player.createPlayer(self.args.tone)
            player.startTransmit(media)
            self.player = player
        if self.recorder is None and self.args.record:
            recorder = pj.AudioMediaRecorder()
            recorder.createRecorder(self.args.record)
            media.startTransmit(recorder)
            self.recorder = recorder
        emit("media active")

    def call_ended(self) -> None:
        # Destroying the recorder writes the WAV header's final sizes.
        self.player = None
        self.recorder = None
        self.call = None

    # -- commands

    def command(self, line: str) -> None:
        name, _, rest = line.strip().partition(" ")
        try:
            if name == "call":
                call = Call(self, self.account)
                call.makeCall(rest.strip(), pj.CallOpParam(True))
                self.call = call
            elif name == "answer" and self.call is not None:
                param = pj.CallOpParam()
                param.statusCode = 200
                self.call.answer(param)
            elif name == "hangup" and self.call is not None:
                self.call.hangup(pj.CallOpParam())
            elif name == "quit":
                self.running = False
            elif name:
                emit(f"error unknown command {line.strip()!r}")
        except pj.Error as error:
            emit(f"error {name}: {error.info()}")

    def run(self) -> None:
        self.create_account()
        emit("ready")
        selector = selectors.DefaultSelector()
        selector.register(sys.stdin, selectors.EVENT_READ)
        buffered = ""
        while self.running:
            self.endpoint.libHandleEvents(20)
            for _key, _mask in selector.select(timeout=0):
                chunk = os.read(sys.stdin.fileno(), 4096).decode()
                if not chunk:
                    self.running = False
                    break
                buffered += chunk
                while "\n" in buffered:
                    line, buffered = buffered.split("\n", 1)
                    self.command(line)
        if self.call is not None:
            with contextlib.suppress(pj.Error):
                self.call.hangup(pj.CallOpParam())
            deadline = time.monotonic() + 2
            while self.call is not None and time.monotonic() < deadline:
                self.endpoint.libHandleEvents(20)
        self.call_ended()
        self.account.shutdown()
        self.endpoint.libDestroy()


class Account(pj.Account):  # type: ignore[misc]
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onRegState(self, prm: object) -> None:
        emit(f"registered {prm.code} {prm.reason}")  # type: ignore[attr-defined]

    def onIncomingCall(self, prm: object) -> None:
        call = Call(self.phone, self, prm.callId)  # type: ignore[attr-defined]
        self.phone.call = call
        emit("incoming")
        if self.phone.args.auto_answer:
            param = pj.CallOpParam()
            param.statusCode = 200
            call.answer(param)


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, phone: Phone, account: Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.phone = phone

    def onCallState(self, prm: object) -> None:
        info = self.getInfo()
        emit(f"state {info.stateText.upper()} {info.lastStatusCode}")
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.phone.call_ended()

    def onCallMediaState(self, prm: object) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.phone.media_active(self)
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--proxy", required=True, help="host:port of the PBX")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="our SIP port (UDP)")
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--tone", help="WAV file played as the microphone in a call")
    parser.add_argument("--record", help="WAV file receiving what the far end sends")
    parser.add_argument("--auto-answer", action="store_true")
    parser.add_argument("--log-level", type=int, default=3)
    Phone(parser.parse_args()).run()


if __name__ == "__main__":
    main()
