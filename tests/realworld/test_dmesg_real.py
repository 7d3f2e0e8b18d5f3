"""``vmci dmesg`` on real Debian guests that wrote known lines to ``/dev/kmsg`` and then crashed.

Oracles: the guest's own words (the lines its ``/init`` wrote, :func:`kmsg_line`; the panic line
its serial console printed; ``_text`` from each kernel's ``/proc/kallsyms``) and the peers
(``makedumpfile --dump-dmesg`` and kexec-tools' ``vmcore-dmesg`` on a kexec-style rewrite of the
same memory, which they accept).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from printk_guest import need
from realworld_helpers import kexec_rewrite

from vmci.formats import open_dump
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.testing.qemu import KMSG_LINES, RealGuest, kmsg_line

pytestmark = pytest.mark.realworld
MAIN = "import sys; sys.argv[0] = 'vmci'; from vmci.cli import main; main()"
LINK_TEXT = 0xFFFFFFFF81000000  # x86_64 _text without KASLR (CONFIG_PHYSICAL_START 16 MiB)
KMSG = re.compile(rb"^\[ *\d+\.\d{6}\] (vmci-kmsg (\d{4}) .*)$", re.M)


def dmesg(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", MAIN, "dmesg", *map(str, args)], capture_output=True,
                          timeout=300)


def check_log(out: bytes, guest: RealGuest) -> None:
    """The guest's own lines, in order, without gaps or garbage, up to the last one it wrote;
    the records that need escaping as makedumpfile escapes them; the console's panic line."""
    found = KMSG.findall(out)
    numbers = [int(n) for _, n in found]
    assert numbers and numbers[-1] == KMSG_LINES - 1
    assert numbers == list(range(numbers[0], KMSG_LINES)), "a gap or a repeat in the guest's lines"
    assert numbers[0] > 0, "the ring should have wrapped"
    assert all(text.decode() == kmsg_line(int(n)) for text, n in found)
    assert b"] vmci-special tab\there bell\\x07end\n" in out
    assert re.search(rb"\] vmci-multi first\n {15}second\n", out)
    panic = guest.facts["panic_line"]
    assert panic and re.search(rb"\] " + re.escape(panic.encode()) + rb"\n", out)


@pytest.mark.parametrize("scenario", ["panic", "panic_without_device"])
@pytest.mark.parametrize("kind", ["elf", "elf_paging", "kdump_zlib", "migration"])
def test_the_guests_own_lines_and_panic(scenario: str, kind: str, request: pytest.FixtureRequest) -> None:
    guest: RealGuest = request.getfixturevalue(scenario)
    p = dmesg(guest[kind])
    assert p.returncode == 0, p.stderr.decode()
    check_log(p.stdout, guest)
    source = b"elf-note" if scenario == "panic" and kind != "migration" else b"memory-scan"
    assert source in p.stderr or b"address-blob" in p.stderr or b"fw-cfg-record" in p.stderr


@pytest.mark.interop
@pytest.mark.parametrize("scenario", ["panic", "panic_without_device"])
def test_byte_identical_to_makedumpfile_and_vmcore_dmesg(scenario: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    guest: RealGuest = request.getfixturevalue(scenario)
    ours = dmesg(guest["kdump_zlib"])
    assert ours.returncode == 0, ours.stderr.decode()
    with open_dump(guest["elf"]) as d:
        vmcore = kexec_rewrite(d, VmcoreInfo.parse(guest.note_desc), tmp_path / "vmcore")
    r = subprocess.run([need("makedumpfile"), "--dump-dmesg", str(vmcore), str(tmp_path / "dmesg")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dmesg").read_bytes() == ours.stdout
    from vmci.kernel.printk import format_dmesg, get_printk_records
    from vmci.kernel.vmem import KernelMemory

    with open_dump(guest["elf"]) as d:
        log = get_printk_records(KernelMemory.from_dump(d, VmcoreInfo.parse(guest.note_desc)))
    r2 = subprocess.run([need("vmcore-dmesg"), str(vmcore)], capture_output=True, timeout=300)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == format_dmesg(log, style="vmcore-dmesg")


def test_kdump_capture_crashed_kernels_log_by_default(kdump_capture: RealGuest) -> None:
    p = dmesg(kdump_capture["elf"])
    assert p.returncode == 0, p.stderr.decode()
    check_log(p.stdout, kdump_capture)
    assert b"crashed kernel" in p.stderr and b"capture kernel" in p.stderr


def test_kdump_capture_kernels_and_their_offsets(kdump_capture: RealGuest) -> None:
    from vmci.analysis.kernel_log import kernels_in_dump

    facts = kdump_capture.guest
    with open_dump(kdump_capture["elf"]) as d:
        kernels = {k.role: k for k in kernels_in_dump(d)}
    assert set(kernels) == {"crashed", "capture"}
    assert kernels["crashed"].kerneloffset == facts.kallsyms["_text"] - LINK_TEXT
    assert kernels["capture"].kerneloffset == facts.capture_kallsyms["_text"] - LINK_TEXT
    assert kernels["crashed"].crashtime is not None and kernels["capture"].crashtime is None
    p = dmesg(kdump_capture["elf"], "--kernel", "capture")
    assert p.returncode == 0 and b"Run /init as init process" in p.stdout and b"vmci-kmsg" not in p.stdout


@pytest.mark.parametrize("scenario", ["panic", "panic_without_device", "kdump_capture"])
def test_triage_reads_the_consoles_panic_line(scenario: str, request: pytest.FixtureRequest) -> None:
    from vmci.fleet.triage import triage

    guest: RealGuest = request.getfixturevalue(scenario)
    rec = triage(guest["kdump_zlib"])
    assert rec.error_class is None
    assert rec.panic == guest.facts["panic_line"]
    assert rec.release == guest.facts["release"]
    assert rec.last_lines and rec.uptime is not None and rec.fingerprint is not None


def test_kdump_capture_analyze_and_kaslr_name_both_kernels(kdump_capture: RealGuest) -> None:
    facts = kdump_capture.guest
    want = {"crashed": facts.kallsyms["_text"] - LINK_TEXT,
            "capture": facts.capture_kallsyms["_text"] - LINK_TEXT}
    for command in ("kaslr", "analyze"):
        p = subprocess.run([sys.executable, "-c", MAIN, command, str(kdump_capture["elf"]), "--json"],
                           capture_output=True, timeout=300)
        out = json.loads(p.stdout)
        k = out if command == "kaslr" else out["kaslr"]
        assert k["verdict"] == "kdump-capture", k.get("warnings")
        assert {r["role"]: r["kerneloffset"] for r in k["kernels"]} == want
        if command == "kaslr":
            assert p.returncode == 0
        else:
            assert out["panic"]["panic"] == kdump_capture.facts["panic_line"]
