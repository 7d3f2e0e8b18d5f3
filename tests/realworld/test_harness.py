"""The real-QEMU harness itself, checked with real tools (readelf, makedumpfile, crash, QMP)."""

from __future__ import annotations

import gzip
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vmci.testing.qemu import (
    SCENARIOS,
    Guest,
    KernelFiles,
    QemuError,
    RealGuest,
    build_initramfs,
    module_load_order,
)

pytestmark = pytest.mark.realworld

ALL = list(SCENARIOS)
WITH_NOTE_DEVICE = [name for name, sc in SCENARIOS.items() if sc.vmcoreinfo]
WITH_VMGENID = [name for name, sc in SCENARIOS.items() if sc.vmgenid_guid]
NOTE_SIZE_4K = 4132  # 2 * 12-byte headers + "VMCOREINFO\0" padded + 4096 bytes of text


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install {package})")
    return path


def readelf_notes(path: Path) -> list[tuple[str, int, bytes | None]]:
    """(owner, data size, description bytes if readelf printed them) for each note."""
    out = subprocess.run(
        [tool("readelf", "binutils"), "-n", "--wide", str(path)], capture_output=True, text=True, check=True
    ).stdout
    notes: list[tuple[str, int, bytes | None]] = []
    for line in out.splitlines():
        # With --wide the hex follows on the same line; without it, on the next one.
        head, _, data = line.partition("description data:")
        m = re.match(r"^\s+(\S+)\s+(0x[0-9a-f]+)\s", head)
        if m:
            notes.append((m.group(1), int(m.group(2), 16), None))
        if data and notes:
            owner, size, _ = notes[-1]
            notes[-1] = (owner, size, bytes.fromhex(data))
    return notes


def desc_value(desc: bytes, key: str) -> str:
    for line in desc.decode().splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1 :]
    raise AssertionError(f"{key} not in the VMCOREINFO text")


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_guest_boots_and_reports_vmcoreinfo(scenario: RealGuest, kernel_files: KernelFiles) -> None:
    facts = scenario.facts
    assert facts["release"] == kernel_files.version
    assert facts["cpus"] == SCENARIOS[scenario.name].smp
    paddr, size = facts["vmcoreinfo_paddr"], facts["vmcoreinfo_size"]
    assert paddr % 4096 == 0
    assert size == NOTE_SIZE_4K
    assert any(lo <= paddr and paddr + size <= hi for lo, hi in facts["system_ram"])
    # The note is in guest RAM whether or not QEMU has the vmcoreinfo device.
    note = scenario.note
    assert len(note) == size
    namesz, descsz, ntype = struct.unpack_from("<III", note)
    assert (namesz, ntype, note[12:24]) == (11, 0, b"VMCOREINFO\0\0")
    assert 0 < descsz <= size - 24 - 12
    desc = scenario.note_desc
    assert desc_value(desc, "OSRELEASE") == facts["release"]
    # The kernel's own phys_base (decimal) agrees with /proc/iomem and /proc/kallsyms.
    assert int(desc_value(desc, "NUMBER(phys_base)")) == facts["phys_base"]
    assert int(desc_value(desc, "SYMBOL(_stext)"), 16) == facts["kallsyms"]["_stext"]


def test_nokaslr_scenario_has_the_default_layout(nokaslr: RealGuest, with_device: RealGuest) -> None:
    assert "nokaslr" in nokaslr.facts["guest"]["cmdline"][0]
    assert nokaslr.facts["phys_base"] == 0
    assert nokaslr.facts["kallsyms"]["_text"] == 0xFFFFFFFF81000000
    assert "nokaslr" not in with_device.facts["guest"]["cmdline"][0]


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_boot_and_dump_timings(scenario: RealGuest, record_property: pytest.RecordProperty) -> None:
    timings = scenario.facts["timings"]
    for key, seconds in timings.items():
        record_property(f"{scenario.name}_{key}_s", round(seconds, 2))
    assert set(timings) == {"boot", "elf", "elf_paging", "kdump_zlib", "migration"}
    assert 0 < timings["boot"] < 180


@pytest.mark.parametrize("scenario", WITH_NOTE_DEVICE, indirect=True)
@pytest.mark.parametrize("kind", ["elf", "elf_paging"])
def test_readelf_shows_the_guest_vmcoreinfo_note(scenario: RealGuest, kind: str) -> None:
    notes = readelf_notes(scenario[kind])
    owners = [n[0] for n in notes]
    cpus = scenario.facts["cpus"]
    # QEMU's order: one CORE per CPU, one QEMU per CPU, then the guest's note.
    assert owners == ["CORE"] * cpus + ["QEMU"] * cpus + ["VMCOREINFO"]
    _, size, desc = notes[-1]
    assert size == len(scenario.note_desc)
    assert desc == scenario.note_desc


def test_readelf_without_device_lists_no_vmcoreinfo(without_device: RealGuest) -> None:
    owners = [n[0] for n in readelf_notes(without_device["elf"])]
    cpus = without_device.facts["cpus"]
    assert owners == ["CORE"] * cpus + ["QEMU"] * cpus


def test_paging_elf_uses_extended_program_header_count(with_device: RealGuest) -> None:
    with with_device["elf_paging"].open("rb") as f:
        head = f.read(64)
    assert head[:4] == b"\x7fELF"
    e_phnum = struct.unpack_from("<H", head, 56)[0]
    assert e_phnum == 0xFFFF  # PN_XNUM: the real count is in section header 0's sh_info


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_kdump_zlib_is_flattened(scenario: RealGuest) -> None:
    with scenario["kdump_zlib"].open("rb") as f:
        assert f.read(16) == b"makedumpfile\0\0\0\0"


def test_makedumpfile_reassembles_and_crash_reads_release(
    reassembled_kdump: Path, with_device: RealGuest
) -> None:
    with reassembled_kdump.open("rb") as f:
        assert f.read(8) == b"KDUMP   "
    crash = tool("crash", "crash")
    cmd = [crash, "--osrelease", str(reassembled_kdump)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == with_device.facts["release"]


SECTION_FULL = 0x04


def full_section(stream: bytes, idstr: bytes) -> tuple[int, bytes] | None:
    """(version, bytes after the header) of the QEVM_SECTION_FULL named ``idstr``, instance 0."""
    pattern = re.escape(bytes([SECTION_FULL])) + b"(?s:....)" + re.escape(bytes([len(idstr)]) + idstr)
    pattern += b"\0\0\0\0(?s:(....))"
    m = re.search(pattern, stream)
    if m is None:
        return None
    return struct.unpack(">I", m.group(1))[0], stream[m.end() : m.end() + 64]


@pytest.mark.parametrize("scenario", ALL, indirect=True)
def test_migration_stream_carries_the_device_state(scenario: RealGuest) -> None:
    stream = scenario["migration"].read_bytes()
    assert stream[:8] == b"QEVM\0\0\0\3"
    sc = SCENARIOS[scenario.name]
    found = full_section(stream, b"vmcoreinfo")
    if not sc.vmcoreinfo:
        assert found is None
    else:
        assert found is not None
        version, body = found
        assert version == 1
        has, host_format, guest_format, size, paddr = struct.unpack_from(">?HHIQ", body)
        # Linux's full 16-byte write replaces QEMU's host_format (1) with the 0 it sends (6.1).
        assert (has, guest_format) == (True, 1)
        assert host_format in (0, 1)
        assert (size, paddr) == (scenario.facts["vmcoreinfo_size"], scenario.vmcoreinfo_paddr)
    gen = full_section(stream, b"vmgenid")
    if sc.vmgenid_guid is None:
        assert gen is None
    else:
        assert gen is not None
        guid_addr = int.from_bytes(gen[1][:8], "little")
        assert guid_addr % 4096 == 40  # firmware's blob + 40


@pytest.mark.parametrize("scenario", WITH_VMGENID, indirect=True)
def test_query_vm_generation_id_returns_the_given_guid(scenario: RealGuest) -> None:
    assert scenario.facts["qmp_guid"] == SCENARIOS[scenario.name].vmgenid_guid


def test_dump_capability_lists_elf_and_kdump_zlib(with_device: RealGuest) -> None:
    assert {"elf", "kdump-zlib"} <= set(with_device.facts["dump_formats"])


def test_guest_lifecycle_hmp_and_pmemsave(kernel_files: KernelFiles, initramfs_dir: Path) -> None:
    initramfs = build_initramfs(kernel_files, initramfs_dir)
    assert build_initramfs(kernel_files, initramfs_dir) == initramfs  # cached by content key
    guest = Guest(kernel_files, initramfs=initramfs, smp=1, memory="128M", kaslr=False)
    with guest:
        assert guest.proc is not None and guest.proc.poll() is None
        assert guest.facts.release == kernel_files.version
        assert guest.facts.phys_base == 0
        paddr = guest.facts.vmcoreinfo_paddr
        guest.stop()
        raw = guest.read_phys(paddr, 32)
        assert raw[12:23] == b"VMCOREINFO\0"
        # HMP xp prints "<addr>: 0x.. 0x.." lines; it must agree with pmemsave.
        text = guest.hmp(f"xp /32xb {paddr:#x}")
        shown = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})\b", text))
        assert shown == raw
        with pytest.raises(QemuError, match=r"query-vm-generation-id"):
            guest.query_vm_generation_id()
        workdir = guest.workdir
    assert guest.proc.poll() is not None
    assert not workdir.exists()


def test_initramfs_is_reproducible_and_holds_what_init_needs(
    kernel_files: KernelFiles, tmp_path: Path
) -> None:
    a = build_initramfs(kernel_files, tmp_path / "a")
    b = build_initramfs(kernel_files, tmp_path / "b")
    assert a.name == b.name
    assert a.read_bytes() == b.read_bytes()
    listing = subprocess.run(
        [tool("cpio", "cpio"), "-it", "--quiet"],
        input=gzip.decompress(a.read_bytes()),
        capture_output=True,
        check=True,
    ).stdout.decode().split()
    assert {"init", "bin/busybox", "lib/modules/qemu_fw_cfg.ko"} <= set(listing)
    modules = [p.name for p in module_load_order(kernel_files.modules_dir, "qemu_fw_cfg")]
    assert modules[-1].split(".ko")[0] == "qemu_fw_cfg"
