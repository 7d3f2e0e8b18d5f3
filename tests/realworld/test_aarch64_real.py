"""Real arm64 guests: Debian's 6.1 arm64 kernel under ``qemu-system-aarch64 -machine virt -cpu
cortex-a57`` (TCG), with and without ``-device vmcoreinfo``, KASLR on and ``nokaslr``, booted
directly and through edk2 (ACPI), dumped as ELF, kdump-zlib and a migration stream.

Oracles, all the guest's own words: the VMCOREINFO note the kernel keeps in RAM (QEMU's
``pmemsave`` at the address ``/sys/kernel/vmcoreinfo`` gave), ``_stext`` from ``/proc/kallsyms``
(the ``nokaslr`` guest's is the link address) and "Kernel code" from ``/proc/iomem``, the serial
console, the lines the guest wrote to ``/dev/kmsg``, the firmware's "ACPI: RSDP" boot line.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from vmci.analysis.analyze import analyze
from vmci.analysis.kaslr import kaslr_for_dump, vmcoreinfo_for_kaslr
from vmci.core.headers import KdumpHeader
from vmci.firmware.acpi import find_rsdp, list_tables
from vmci.formats import open_dump
from vmci.kernel.printk import format_dmesg, get_printk_records
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory
from vmci.machine.aarch64_virt import VIRT_MEM
from vmci.testing.qemu import AARCH64_SCENARIOS, RealGuest, kmsg_line

pytestmark = pytest.mark.realworld

WITH_NOTE = ["arm64_with_device", "arm64_nokaslr", "arm64_panic", "arm64_uefi"]
DUMPS = ["elf", "kdump_zlib", "migration"]
U64 = (1 << 64) - 1


def _stext(guest: RealGuest) -> int:
    return int(guest.facts["kallsyms"]["_stext"])


@pytest.mark.parametrize("arm64_scenario", list(AARCH64_SCENARIOS), indirect=True)
def test_the_guest_and_its_dumps(arm64_scenario: RealGuest, record_property: pytest.RecordProperty) -> None:
    """The harness booted what the scenario says, and readelf (binutils) reads QEMU's arm64 ELF."""
    g = arm64_scenario
    sc = AARCH64_SCENARIOS[g.name]
    cmd = g.facts["command_line"]
    append = cmd[cmd.index("-append") + 1]
    assert cmd[0] == "qemu-system-aarch64" and cmd[cmd.index("-cpu") + 1] == "cortex-a57"
    assert cmd[cmd.index("-machine") + 1] == "virt" and "console=ttyAMA0" in append
    assert ("nokaslr" in append) == (not sc.kaslr) and ("vmcoreinfo" in cmd) == sc.vmcoreinfo
    assert ("-bios" in cmd) == (sc.firmware == "uefi")
    assert {"elf", "kdump-zlib"} <= set(g.facts["dump_formats"])
    record_property("timings", g.facts["timings"])
    readelf = shutil.which("readelf")
    assert readelf is not None, "binutils is a CI dependency"
    out = subprocess.run([readelf, "-h", "-n", str(g["elf"])], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"Machine:\s+AArch64", out)
    assert out.count("NT_PRSTATUS") == 2 and out.count("NT_FPREGSET") == 2
    assert ("VMCOREINFO" in out) == sc.vmcoreinfo


@pytest.mark.parametrize("dump", DUMPS)
@pytest.mark.parametrize("arm64_scenario", WITH_NOTE, indirect=True)
def test_vmcoreinfo_is_the_kernels_own(arm64_scenario: RealGuest, dump: str) -> None:
    g = arm64_scenario
    with open_dump(g[dump]) as d:
        assert d.arch == "aarch64" and len(d.cpus) == g.facts["cpus"] == 2
        text, source = vmcoreinfo_for_kaslr(d)
        assert source == ("fw-cfg-record" if dump == "migration" else "elf-note")
        assert text is not None and text.raw == g.note_desc
        if dump == "kdump_zlib":  # QEMU's arm64 header: no machine name, 64 KiB blocks, PHYS_OFFSET
            h = d.header
            assert isinstance(h, KdumpHeader)
            assert (h.utsname.machine, h.block_size) == ("Unknown", 65536)
            assert h.phys_base == text.number("PHYS_OFFSET")
        if dump == "migration":
            assert d.saved_state is not None and d.saved_state.migration.machine_family == "virt"
            assert d.memory.ranges[0].start == VIRT_MEM


@pytest.mark.parametrize("dump", DUMPS)
def test_without_the_device_the_scan_finds_the_kernels_note(arm64_without_device: RealGuest,
                                                             dump: str) -> None:
    g = arm64_without_device
    with open_dump(g[dump]) as d:
        assert vmcoreinfo_for_kaslr(d) == (None, None)  # nothing in the dump points at it
        text, source = vmcoreinfo_for_kaslr(d, scan=True)
        assert source == "memory-scan" and text is not None and text.raw == g.note_desc


@pytest.mark.parametrize("dump", DUMPS)
@pytest.mark.parametrize("arm64_scenario", ["arm64_with_device", "arm64_without_device", "arm64_panic",
                                            "arm64_uefi", "arm64_nokaslr"], indirect=True)
def test_kerneloffset_is_the_guests(arm64_scenario: RealGuest, arm64_nokaslr: RealGuest, dump: str) -> None:
    """KERNELOFFSET = the guest's _stext minus the link address (the nokaslr guest's _stext), from
    the VMCOREINFO and, independently, from the tables (swapper_pg_dir found in a dump's RAM, or the
    migration stream's TTBR1_EL1); kimage_voffset = _stext minus "Kernel code"."""
    g = arm64_scenario
    want = _stext(g) - _stext(arm64_nokaslr)
    with open_dump(g[dump]) as d:
        rep = kaslr_for_dump(d, scan=True)
        assert rep.verdict == "agree", rep.warnings
        assert rep.kerneloffset == want
        res = rep.result
        assert res is not None and res.kerneloffset == want
        assert res.method == ("page-tables" if dump == "migration" else "swapper-pg-dir-scan")
        assert (res.text_va - res.text_pa) & U64 == g.facts["kimage_voffset"]
        assert res.text_va == _stext(g)  # since 5.11 the first mapping is _stext
        text, _ = vmcoreinfo_for_kaslr(d, scan=True)
        assert text is not None and res.phys_base == text.number("PHYS_OFFSET")
        assert all(v.get("ok") for v in rep.corroboration.values()), rep.corroboration
    if g.name == "arm64_nokaslr":
        assert want == 0
    elif g.name == "arm64_uefi":  # no EFI_RNG on QEMU: no KASLR, but the stub's 64 KiB placement shows
        assert want % 0x200000 and want % 0x10000 == 0
    else:
        assert want % 0x200000 == 0 and want >= 1 << 45


@pytest.mark.parametrize("dump", DUMPS)
def test_kaslr_without_any_vmcoreinfo(arm64_without_device: RealGuest, arm64_nokaslr: RealGuest,
                                      dump: str) -> None:
    """No note in the dump and no scan: the tables alone give KASLR (vmci's own heuristic)."""
    with open_dump(arm64_without_device[dump]) as d:
        rep = kaslr_for_dump(d)
        assert rep.verdict == "page-tables-only"
        assert rep.kerneloffset == _stext(arm64_without_device) - _stext(arm64_nokaslr)


@pytest.mark.parametrize("dump", DUMPS)
@pytest.mark.parametrize("arm64_scenario", ["arm64_with_device", "arm64_without_device", "arm64_uefi"],
                         indirect=True)
def test_the_kernel_log_is_what_the_console_printed(arm64_scenario: RealGuest, dump: str) -> None:
    g = arm64_scenario
    serial = set(g["serial_log"].read_bytes().replace(b"\r\n", b"\n").splitlines())
    with open_dump(g[dump]) as d:
        text, _ = vmcoreinfo_for_kaslr(d, scan=True)
        log = get_printk_records(KernelMemory.from_dump(d, text))
    assert log.variant == "lockless" and log.warnings == () and log.failed == 0
    assert [r.seq for r in log.records] == list(range(len(log.records)))
    shown = [r for r in log.records if b"\n" not in r.text and r.text and r.level is not None and r.level < 7]
    printed = [format_dmesg([r]).rstrip(b"\n") in serial for r in shown]
    # /init turns the console down to level 1 before its facts: records from then on stay off it
    cut = printed.index(False) if False in printed else len(printed)
    assert cut > 150 and all(printed[:cut]) and all(r.level >= 1 for r in shown[cut:])
    assert any(b"Booting Linux on physical CPU" in r.text for r in log.records)


@pytest.mark.parametrize("dump", DUMPS)
def test_the_panicked_kernels_log(arm64_panic: RealGuest, dump: str) -> None:
    """The lines the guest wrote to /dev/kmsg (the ring wrapped: the newest survive, in order) and
    its panic line."""
    g = arm64_panic
    with open_dump(g[dump]) as d:
        text, _ = vmcoreinfo_for_kaslr(d)
        assert text is not None
        log = get_printk_records(KernelMemory.from_dump(d, VmcoreInfo.parse(text.raw)))
    written = g.facts["kmsg_written"]
    lines = [r.text.decode() for r in log.records]
    ours = [ln for ln in lines if ln.startswith("vmci-kmsg ")]
    assert ours and ours == [kmsg_line(i) for i in range(written - len(ours), written)]
    panic = g.facts["panic_line"]
    assert panic is not None and panic in lines


@pytest.mark.parametrize("arm64_scenario", ["arm64_with_device", "arm64_panic"], indirect=True)
def test_analyze_has_no_x86_warnings(arm64_scenario: RealGuest) -> None:
    with open_dump(arm64_scenario["kdump_zlib"]) as d:
        res = analyze(d).to_dict()
    checks = {c["name"]: c for c in res["checks"]}
    phys = checks["kdump-phys-base"]
    assert phys["status"] == "PASS" and "PHYS_OFFSET" in phys["detail"]
    assert checks["kaslr-keys"]["status"] == "PASS"
    assert res["status"] == "PASS", [c for c in res["checks"] if c["status"] != "PASS"]


def test_uefi_acpi_tables(arm64_uefi: RealGuest) -> None:
    """Under edk2 the guest boots with ACPI: the RSDP the firmware published (the kernel's boot
    line names it) is found in the dump, 8-byte aligned, with its XSDT and tables."""
    m = re.search(rb"ACPI: RSDP 0x([0-9A-F]+) ", arm64_uefi["serial_log"].read_bytes())
    assert m is not None
    with open_dump(arm64_uefi["elf"]) as d:
        rsdp, _ = find_rsdp(d.memory)
        assert rsdp is not None and rsdp.address == int(m.group(1), 16) and rsdp.revision == 2
        tables, _ = list_tables(d.memory, rsdp)
    assert {"FACP", "APIC", "GTDT"} <= {t.signature for t in tables}


@pytest.mark.parametrize("dump", ["elf", "kdump_zlib", "migration"])
def test_drgn_reads_the_guest(arm64_with_device: RealGuest, dump: str) -> None:
    """``vmci drgn``: drgn gets the aarch64 platform and reads the running release."""
    from vmci.integrations.drgn import program_from_dump  # drgn is a test dependency

    info = VmcoreInfo.parse(arm64_with_device.note_desc)
    uts = info.symbol("init_uts_ns")
    assert uts is not None
    prog = program_from_dump(arm64_with_device[dump])
    assert prog.platform.arch.name == "AARCH64"
    release = prog.read(uts + (info.offset("uts_namespace", "name") or 0) + 130, 65).split(b"\0", 1)[0]
    assert release.decode() == arm64_with_device.facts["release"]
