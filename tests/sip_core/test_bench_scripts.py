"""Every benchmark runs as documented from a fresh shell, whichever `python3` its shebang finds.

A script's shebang may find an older system Python, which must at least parse the script and reach
`bench/_interpreter.py`, which then starts it again on the project's Python (see bench/README.md).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# The oldest python3 a shebang is likely to meet on a supported host (Debian 12's).
OLDEST = (3, 11)
SCRIPTS = sorted(
    path
    for path in BENCH.iterdir()
    if path.is_file()
    and os.access(path, os.X_OK)
    and path.read_text().startswith("#!")
    and "python" in path.read_text().splitlines()[0]
)


def test_the_benchmarks_are_found() -> None:
    names = {path.name for path in SCRIPTS}
    assert {"relay", "flip", "calls", "register", "soak", "fuzz", "loss", "playback"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_parses_on_an_older_python_and_reruns_itself(script: Path) -> None:
    source = script.read_text()
    tree = ast.parse(source, filename=str(script), feature_version=OLDEST)
    imported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            imported.append(node.module or "")
    assert "_interpreter" in imported, "the script never hands over to the project's Python"
    project = [name for name in imported if name.startswith(("sip_core", "_", "tests"))]
    assert project[0] == "_interpreter", f"{project[0]} is imported before _interpreter"


def test_newer_syntax_is_caught() -> None:
    with pytest.raises(SyntaxError):
        ast.parse("def within[T](value: T) -> T: ...", feature_version=OLDEST)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_the_load_generator_builds_and_matches_kernel_send_and_receive_timestamps(
    tmp_path: Path,
) -> None:
    """bench/rtpgen.c against a trivial relay (two echoing sockets): every packet sent in its
    window comes back, and each has both kernel timestamps (so its latency is kernel to kernel)."""
    binary = tmp_path / "rtpgen"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(BENCH / "rtpgen.c")],
        check=True,
        capture_output=True,
    )
    echoes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for echo in echoes:
        echo.bind(("127.0.0.1", 0))
        echo.setblocking(False)
    stop = threading.Event()

    def echo_back() -> None:
        # Whichever socket has a packet is served (waiting on one while the other's queue grew
        # could leave packets unanswered past the generator's drain on a busy machine).
        while not stop.is_set():
            ready, _, _ = select.select(echoes, [], [], 0.05)
            for echo in ready:
                with contextlib.suppress(BlockingIOError):
                    data, peer = echo.recvfrom(2048)
                    echo.sendto(data, peer)

    thread = threading.Thread(target=echo_back, daemon=True)
    thread.start()
    try:
        ports = f"1\n{echoes[0].getsockname()[1]} {echoes[1].getsockname()[1]}\n"
        done = subprocess.run(
            [str(binary), "0.5", "0.1", "2"],
            input=ports,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        stop.set()
        thread.join()
        for echo in echoes:
            echo.close()
    lines = done.stdout.splitlines()
    assert lines[0] == "measure"
    result = json.loads(lines[-1])
    assert result["sent"] > 0
    assert result["received"] == result["sent"]
    assert result["tx_stamped"] == result["received"] == result["kernel_stamped"]
    assert 0 <= result["p50_us"] <= result["p99_us"] <= result["max_us"]
