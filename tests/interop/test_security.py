"""SIPVicious (Debian ``sipvicious``) against the runner, on its shipped defaults.

The runner listens on 127.0.0.1; the attacker sends from other loopback addresses (127.0.0.2,
127.0.0.3), so the household's own address (127.0.0.1) shows whether others are affected. The
tools run unchanged through ``sipvicious_as.py``, which only picks their source address (the
0.3.3 tools ignore ``--bindingip``) and, where a test says so, their User-Agent: the stock one
(``friendly-scanner``) is dropped on sight, so the tests that are about bans and enumeration run
them as a scanner that lies about its name, which is what a real attacker does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .clients import ProcessResult, run_process, run_sipp, sipsak_register
from .conftest import RunningPbx, StartPbx, users_from

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("svwar") is None or not Path("/usr/share/sipvicious").is_dir(),
        reason="SIPVicious is not installed (scripts/setup installs Debian's sipvicious)",
    ),
]

WRAPPER = Path(__file__).with_name("sipvicious_as.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Debian's sipvicious is installed for
DISGUISE = "Linphone/5.2.0 (belle-sip/5.2.0)"
DEVICES = {"201": "correct-horse-201", "202": "battery-staple-202"}
ATTACKER = "127.0.0.2"
SCANNER = "127.0.0.3"


async def sipvicious(
    tool: str, pbx: RunningPbx, *arguments: str, source: str, agent: str | None = None
) -> ProcessResult:
    """Run one SIPVicious tool against the runner from ``source``; ``agent`` replaces its
    User-Agent (None keeps ``friendly-scanner``)."""
    argv = [
        SYSTEM_PYTHON, str(WRAPPER), source, agent or "-", tool,
        *arguments, pbx.host, "-p", str(pbx.port),
    ]  # fmt: skip
    return await run_process(argv, time_limit=120)


def found_nothing(result: ProcessResult) -> bool:
    return "found nothing" in result.stdout + result.stderr


def log_lines(pbx: RunningPbx, address: str) -> list[str]:
    return [line for line in pbx.lines if f" {address}" in line]


async def test_stock_scanners_get_no_answer_at_all(start_pbx: StartPbx) -> None:
    pbx = await start_pbx(users_from(DEVICES))
    survey = await sipvicious("svmap", pbx, source=SCANNER)
    assert found_nothing(survey), survey.describe()
    for method in ("REGISTER", "INVITE", "OPTIONS"):
        scan = await sipvicious(
            "svwar", pbx, "-e", "195-210", "-m", method, "--maximumtime", "2", source=SCANNER
        )
        assert found_nothing(scan), scan.describe()
        assert "201" not in scan.stdout
        assert "202" not in scan.stdout
    assert await pbx.wait_for_log(rf"Ignoring {re.escape(SCANNER)}: .*SIP scanner")
    # One line for the whole scan, not one per request.
    assert len(log_lines(pbx, SCANNER)) == 1, pbx.log()


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
async def test_svwar_finds_no_extension(start_pbx: StartPbx, method: str) -> None:
    """Disguised, so it gets answers; they are the same for every extension, real or not."""
    pbx = await start_pbx(users_from(DEVICES))
    scan = await sipvicious(
        "svwar", pbx, "-e", "195-210,2009,2019", "-m", method, "--maximumtime", "2",
        source=SCANNER, agent=DISGUISE,
    )  # fmt: skip
    assert found_nothing(scan), scan.describe()
    # Forced past its sanity check, it can only list its own random probe: every answer it got
    # looked like the one for an extension that cannot exist.
    forced = await sipvicious(
        "svwar", pbx, "--force", "-e", "195-210,2009,2019", "-m", method, "--maximumtime", "2",
        source=SCANNER, agent=DISGUISE,
    )  # fmt: skip
    listed = re.findall(r"^\|\s*(\d+)\s*\|", forced.stdout, re.MULTILINE)
    assert not {"201", "202", "2019", "2029"} & set(listed), forced.describe()
    assert all(len(extension) >= 8 for extension in listed), forced.describe()


async def test_svcrack_is_banned_within_six_attempts(start_pbx: StartPbx, tmp_path: Path) -> None:
    pbx = await start_pbx(users_from(DEVICES))
    words = [f"guess{index:02d}" for index in range(20)] + [DEVICES["201"]]
    dictionary = tmp_path / "words.txt"
    dictionary.write_text("\n".join(words) + "\n")
    crack = await sipvicious(
        "svcrack", pbx, "-u", "201", "-d", str(dictionary), "--maximumtime", "3",
        source=ATTACKER, agent=DISGUISE,
    )  # fmt: skip
    # The right password was the last word: the attacker never learns it.
    assert found_nothing(crack), crack.describe()
    assert DEVICES["201"] not in crack.stdout
    banned = await pbx.wait_for_log(rf"Banned {re.escape(ATTACKER)} .*username tried: 201")
    refused = [line for line in log_lines(pbx, ATTACKER) if "refused with 401" in line]
    assert 1 <= len(refused) <= 5, pbx.log()
    assert sum("Banned" in line for line in pbx.lines) == 1, banned
    # Nothing it sent after the ban was answered (or even logged).
    assert not any("registered" in line.lower() for line in log_lines(pbx, ATTACKER))

    # The same attacker, now with the right password at once: still ignored.
    again_dictionary = tmp_path / "right.txt"
    again_dictionary.write_text(DEVICES["201"] + "\n")
    again = await sipvicious(
        "svcrack", pbx, "-u", "201", "-d", str(again_dictionary), "--maximumtime", "2",
        source=ATTACKER, agent=DISGUISE,
    )  # fmt: skip
    assert found_nothing(again), again.describe()
    assert len([line for line in log_lines(pbx, ATTACKER) if "refused" in line]) == len(refused)

    # Everyone else is unaffected: the phone on 127.0.0.1 registers with its password.
    result = await sipsak_register(pbx.port, "201", DEVICES["201"])
    assert result.ok, result.describe()


async def test_a_benchmark_load_of_registrations_is_never_limited(start_pbx: StartPbx) -> None:
    """sipp as bench/register drives it: one address, hundreds of logins a second, each answering
    its challenge. Nothing is limited or banned, every registration succeeds."""
    devices = {str(10_000 + index): f"load-secret-{index:04d}" for index in range(1000)}
    pbx = await start_pbx(users_from(devices))
    result = await run_sipp("register", pbx.port, devices, rate=400, time_limit=40)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (1000, 0), result.describe()
    assert not any("Limiting" in line or "Banned" in line for line in pbx.lines), pbx.log()
