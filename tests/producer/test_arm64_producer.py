"""The aarch64 producer (QEMU ``virt``, direct kernel boot): what it refuses, and that its dumps are
shaped as QEMU writes them (QEMU's dump/dump.c and target/arm/arch_dump.c; the RAM and CPU
facts of a real 7.2 ``virt`` guest), checked against the producer's own record."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmci.core.headers import KdumpHeader
from vmci.errors import UsageError
from vmci.formats import open_dump
from vmci.machine.aarch64_virt import VIRT_MEM
from vmci.producer.config import Scenario

Dump = Callable[..., tuple[Path, Any]]


@pytest.mark.parametrize(("keys", "message"), [
    ({"device": "rfc"}, "device is one of upstream, none"),
    ({"machine": "q35"}, "machine is one of virt"),
    ({"la57": True}, "x86 keys"),
    ({"vmgenid": True}, "x86 keys"),
    ({"page_size": 16384, "va_bits": 42}, "one of"),
    ({"page_size": 8192}, "4096, 16384 or 65536"),
    ({"kernel": "4.19"}, "5.10 or later"),
    ({"faults": ["missing-ssdt"]}, "RFC device or ACPI"),
    ({"byteorder": "middle"}, "little or big"),
])
def test_refused_scenarios(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Scenario(arch="aarch64", **keys)


def test_defaults_follow_the_architecture() -> None:
    a, x = Scenario(arch="aarch64"), Scenario()
    assert (a.machine, a.firmware, a.device) == ("virt", "none", "upstream")
    assert (x.machine, x.firmware, x.device) == ("q35", "seabios", "rfc")
    assert Scenario.from_dict(a.to_dict()) == a
    with pytest.raises(UsageError, match="aarch64 keys"):
        Scenario(page_size=65536)


def test_elf_as_qemu_writes_it(vmci_dump: Dump) -> None:
    path, truth = vmci_dump("elf", arch="aarch64", cpus=3, seed=1)
    raw = path.read_bytes()
    assert raw[:4] == b"\x7fELF" and raw[4] == 2 and raw[5] == 1  # ELFCLASS64, little-endian
    assert struct.unpack_from("<H", raw, 18)[0] == 183  # EM_AARCH64
    with open_dump(path) as d:
        assert [(r.start, r.size) for r in d.memory.ranges] == [(VIRT_MEM, 32 << 20)]
        names = [(n.name, n.type, len(n.desc)) for n in d.notes]
        text = ("VMCOREINFO", 0, truth["vmcoreinfo"]["text_size"])
        assert names == [("CORE", 1, 392), ("CORE", 2, 528)] * 3 + [text]
        assert [c.regs["pc"] for c in d.cpus] == [c["pc"] for c in truth["cpus"]]
        assert [c.regs["pstate"] for c in d.cpus] == [c["pstate"] for c in truth["cpus"]]
        assert all(c.mmu for c in d.cpus)


@pytest.mark.parametrize("page_size", [4096, 65536])
def test_kdump_header_as_qemu_writes_it(vmci_dump: Dump, page_size: int) -> None:
    """utsname.machine "Unknown", 64 KiB blocks whatever the guest's page size, phys_base =
    NUMBER(PHYS_OFFSET) parsed as hex (right here: the kernel prints it in hex)."""
    path, truth = vmci_dump("kdump", arch="aarch64", page_size=page_size, seed=2)
    assert truth["dump"]["phys_base"] == truth["kernel"]["phys_offset"]
    with open_dump(path) as d:
        h = d.header
        assert isinstance(h, KdumpHeader)
        want = ("Unknown", 65536, truth["kernel"]["phys_offset"])
        assert (h.utsname.machine, h.block_size, h.phys_base) == want
        assert d.arch == "aarch64"  # from the notes: the header does not say
        assert h.max_mapnr == (VIRT_MEM + (32 << 20)) >> 16


def test_kdump_without_a_note_keeps_qemus_guess(vmci_dump: Dump) -> None:
    path, _ = vmci_dump("kdump", arch="aarch64", device="none")
    with open_dump(path) as d:
        assert isinstance(d.header, KdumpHeader) and d.header.phys_base == VIRT_MEM  # the lowest RAM block
        assert d.arch == "aarch64"


def test_migration_stream(vmci_dump: Dump) -> None:
    path, truth = vmci_dump("migration", arch="aarch64", seed=4)
    with open_dump(path) as d:
        saved = d.saved_state
        assert saved is not None and d.arch == "aarch64"
        assert saved.migration.machine == "virt-7.2" and saved.migration.machine_family == "virt"
        assert [b.name for b in saved.migration.ram_blocks] == ["mach-virt.ram"]
        assert [(r.start, r.size) for r in d.memory.ranges] == [(VIRT_MEM, 32 << 20)]
        rec = saved.devices.vmcoreinfo_record
        assert rec is not None and (rec.paddr, rec.size) == (truth["vmcoreinfo"]["note_paddr"],
                                                             truth["vmcoreinfo"]["note_size"])
        for cpu, want in zip(d.cpus, truth["cpus"], strict=True):
            assert [cpu.regs[n] for n in ("pc", "sp", "pstate")] == [want[n] for n in ("pc", "sp", "pstate")]
            assert (cpu.regs["ttbr1_el1"], cpu.regs["tcr_el1"]) == (want["ttbr1_el1"], want["tcr_el1"])
            assert cpu.mmu is True


def test_same_scenario_same_bytes(tmp_path: Path) -> None:
    from vmci.producer.scenario import generate

    digests = []
    for name in ("a", "b"):
        sc = Scenario(arch="aarch64", ram="32M", seed=9, page_size=16384, va_bits=47)
        t = generate(sc, tmp_path / name, "elf")
        digests.append(hashlib.sha256(t.path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_generate_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vmci.cli import app

    out = tmp_path / "arm.kdump"
    args = ["generate", "-o", str(out), "--arch", "aarch64", "--ram", "32M", "--page-size", "65536",
            "--va-bits", "52", "--format", "kdump"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    with open_dump(out) as d:
        assert d.arch == "aarch64" and len(d.cpus) == 2
