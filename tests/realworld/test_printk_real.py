"""The kernel log of a real Debian guest (Linux 6.1, lockless ring), read from QEMU's ELF with
nothing but the VMCOREINFO text the guest wrote (the note buffer QEMU read from guest RAM, so a
note-less dump works the same).

Oracles: the guest's own serial console (every record below the console log level, 7, was
printed there; KERN_DEBUG records were not), makedumpfile --dump-dmesg and vmcore-dmesg on the
same memory rewritten as a kexec-style ELF (with the kernel-text PT_LOAD vmcore-dmesg needs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from printk_guest import need
from realworld_helpers import kexec_rewrite

from vmci.formats import open_dump
from vmci.kernel.printk import PrintkLog, format_dmesg, get_printk_records
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory

pytestmark = pytest.mark.realworld

SCENARIOS = ["with_device", "nokaslr", "ovmf"]


def _read(guest: object, tmp_path: Path | None = None) -> tuple[PrintkLog, Path | None]:
    info = VmcoreInfo.parse(guest.note_desc)  # type: ignore[attr-defined]
    with open_dump(guest["elf"]) as d:  # type: ignore[index]
        log = get_printk_records(KernelMemory.from_dump(d, info))  # the real virtual-read seam
        vmcore = kexec_rewrite(d, info, tmp_path / "vmcore") if tmp_path is not None else None
    return log, vmcore


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_log_is_what_the_console_printed(scenario: str, request: pytest.FixtureRequest) -> None:
    guest = request.getfixturevalue(scenario)
    log, _ = _read(guest)
    assert log.variant == "lockless" and log.warnings == () and len(log.records) > 200
    assert log.failed == 0 and [r.seq for r in log.records] == list(range(len(log.records)))
    serial = set(guest["serial_log"].read_bytes().replace(b"\r\n", b"\n").splitlines())
    single = [r for r in log.records if b"\n" not in r.text and r.text]
    shown = [r for r in single if r.level is not None and r.level < 7]
    debug = [r for r in single if r.level == 7]
    assert len(shown) > 200 and debug
    assert all(format_dmesg([r]).rstrip(b"\n") in serial for r in shown)
    assert not any(format_dmesg([r]).rstrip(b"\n") in serial for r in debug)
    assert log.records[0].text.startswith(b"Linux version 6.")


@pytest.mark.interop
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_byte_identical_to_the_peers(scenario: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    log, vmcore = _read(request.getfixturevalue(scenario), tmp_path)
    assert vmcore is not None
    r = subprocess.run([need("makedumpfile"), "--dump-dmesg", str(vmcore), str(tmp_path / "dmesg")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dmesg").read_bytes() == format_dmesg(log)
    r2 = subprocess.run([need("vmcore-dmesg"), str(vmcore)], capture_output=True, timeout=300)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == format_dmesg(log, style="vmcore-dmesg")
