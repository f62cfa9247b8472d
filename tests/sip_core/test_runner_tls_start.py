"""The runner's ``tls`` listener: a certificate that was fine when the file was read but is gone
when the PBX starts (deleted, or replaced by something else in between) ends the runner with a
clear line and the usage exit code, not a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import sip_core.__main__ as runner
from sip_core.config import PbxConfig, load_config
from tests.tls_certs import TestCa


def test_a_certificate_gone_before_start_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = TestCa.create(tmp_path / "ca")
    files = ca.issue(tmp_path / "server")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_file = tmp_path / "pbx.yaml"
    config_file.write_text(
        f"sip: {{listen: 127.0.0.1, port: {port}}}\n"
        "users: [{name: Alice, extension: '200', devices: [{username: '201', password: "
        "'a-long-pass-1'}]}]\n"
        f"tls: {{certificate: {files.certificate}, key: {files.key}, port: 0}}\n"
    )

    def load_then_lose_the_key(path: str) -> PbxConfig:
        config = load_config(path)  # checked here: the files are fine
        files.key.unlink()
        return config

    monkeypatch.setattr(runner, "load_config", load_then_lose_the_key)
    code = runner.main(["--config", str(config_file), "--state", str(tmp_path / "state.json")])
    assert code == runner.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("callflip: tls: ")
    assert "Traceback" not in err
