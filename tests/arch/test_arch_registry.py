"""The architecture registry: lookups by name, uname spelling, ELF machine and VMCOREINFO keys, and a
new architecture plugged in without edits elsewhere (its CPU notes reach ``Dump.cpus``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from vmci import arch
from vmci.core.dump import CpuState, Note
from vmci.core.memory import Range, SparseMemory
from vmci.errors import UnsupportedError
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.notes import encode_notes
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.layouts.elf import EM_386, EM_AARCH64, EM_ARM, EM_X86_64


def test_builtin_lookups() -> None:
    x86, i386 = arch.get("x86_64"), arch.get("i386")
    assert [a.name for a in arch.all_arches()][:2] == ["x86_64", "i386"]
    assert arch.lookup("i686") is i386 and arch.canonical_name("i586") == "i386"
    assert arch.canonical_name("Unknown") == "Unknown" and arch.lookup("Unknown") is None
    assert arch.by_elf_machine(EM_X86_64) is x86 and arch.by_elf_machine(EM_386) is i386
    arm64 = arch.get("aarch64")
    assert arch.by_elf_machine(EM_AARCH64) is arm64 and arch.lookup("arm64") is arm64
    assert arch.by_elf_machine(EM_ARM) is arch.get("arm") and arch.lookup("armv7l") is arch.get("arm")
    assert arch.default_arch(8) is x86 and arch.default_arch(4) is i386
    assert (x86.pointer_size, x86.page_size, x86.drgn_arch) == (8, 4096, "X86_64")
    assert x86.kernel is not None and i386.kernel is None
    assert (x86.kernel.image_start, x86.kernel.text_link, x86.kernel.physical_align) == (
        0xFFFFFFFF80000000, 0xFFFFFFFF81000000, 0x200000)  # __START_KERNEL_map, _text, CONFIG_PHYSICAL_ALIGN
    assert x86.kernel_phys(0xFFFFFFFF81000000, -0x200000) == 0xE00000
    assert x86.kernel_virt(0xE00000, -0x200000) == 0xFFFFFFFF81000000
    assert x86.kernel_phys(0xFFFF888000000000, 0) is None  # the direct map is not the image
    assert x86.translates and x86.finds_kaslr and not i386.translates and not i386.finds_kaslr
    assert arch.supporting("finds_kaslr") == ["x86_64", "aarch64"]
    assert (arm64.pointer_size, arm64.page_sizes, arm64.drgn_arch) == (8, (4096, 16384, 65536), "AARCH64")
    assert arch.by_prstatus_size(392) is arm64 and arch.by_prstatus_size(336) is x86
    with pytest.raises(UnsupportedError, match="'sparc' is not supported"):
        arch.get("sparc")
    with pytest.raises(UnsupportedError, match="not implemented for i386"):
        i386.kaslr_from_page_tables(SparseMemory([Range(0, 4096)]), [])


def test_architecture_from_the_vmcoreinfo() -> None:
    x86_text = VmcoreInfo.parse(b"OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(phys_base)=0\n")
    arm_text = VmcoreInfo.parse(b"OSRELEASE=6.1.0\nPAGESIZE=4096\nNUMBER(kimage_voffset)=0x0\n")
    assert arch.for_vmcoreinfo(x86_text) is arch.get("x86_64")
    assert arch.for_vmcoreinfo(arm_text) is arch.get("aarch64")


def test_x86_64_root_from_vmcoreinfo_keys() -> None:
    """makedumpfile's formula: SYMBOL(init_top_pgt) - __START_KERNEL_map + NUMBER(phys_base)."""
    x86 = arch.get("x86_64")
    # Debian 6.1 under KASLR: KERNELOFFSET 0x2c000000, phys_base -0x14a00000
    text = VmcoreInfo.parse(b"SYMBOL(init_top_pgt)=ffffffffae60a000\nNUMBER(phys_base)=-346030080\n"
                            b"NUMBER(pgtable_l5_enabled)=1\nNUMBER(sme_mask)=140737488355328\n")
    t = x86.kernel_page_tables(text)
    assert t is not None and t.root == 0x2E60A000 - 0x14A00000 == 0x19C0A000
    assert (t.va_bits, t.page_size, t.mask) == (57, 4096, 1 << 47)
    below_ram = VmcoreInfo.parse(b"SYMBOL(init_top_pgt)=ffffffff8260a000\nNUMBER(phys_base)=-346030080\n")
    assert x86.kernel_page_tables(below_ram) is None  # would be a negative physical address
    assert x86.kernel_page_tables(VmcoreInfo.parse(b"SYMBOL(init_top_pgt)=ffffffff8260a000\n")) is None
    legacy = VmcoreInfo.parse(b"SYMBOL(init_level4_pgt)=ffffffff81e09000\n"
                              b"SYMBOL(phys_base)=ffffffff81e10010\n")
    t2 = x86.kernel_page_tables(legacy, phys_base=0x2000000)
    assert t2 is not None and (t2.root, t2.va_bits) == (0x1E09000 + 0x2000000, 48)


EM_RISCV = 243


class ToyArch(arch.Arch):
    """Stands in for the next architecture: a name, an ELF machine, a CPU note parser."""

    name = "riscv64"
    machines = ("riscv64",)
    elf_machines = (EM_RISCV,)

    def cpus_from_notes(self, notes: Sequence[Note], *, byteorder: str = "little") -> list[CpuState]:
        prs = [n for n in notes if n.name == "CORE" and n.type == 1]
        return [CpuState(index=i, regs={"pc": int.from_bytes(n.desc[112:120], byteorder)},  # type: ignore[arg-type]
                         sources=["NT_PRSTATUS"]) for i, n in enumerate(prs)]


@pytest.fixture
def toy() -> Iterator[ToyArch]:
    a = arch.register(ToyArch())
    yield a
    arch.unregister(a.name)


def _riscv_elf(path: Path) -> Path:
    desc = bytearray(376)  # riscv64 elf_prstatus: pr_reg (pc first) at 112
    desc[112:120] = (0xFFFFFFFF80123456).to_bytes(8, "little")
    mem = SparseMemory([Range(0x80000000, 1 << 20)])
    with path.open("wb") as f:
        write_elf(f, mem, encode_notes([("CORE", 1, bytes(desc))]), machine=EM_RISCV)
    return path


def test_a_registered_architecture_reads_its_cpu_notes(tmp_path: Path, toy: ToyArch) -> None:
    with open_dump(_riscv_elf(tmp_path / "a.elf")) as d:
        assert d.arch == "riscv64" and not d.warnings
        assert [c.regs["pc"] for c in d.cpus] == [0xFFFFFFFF80123456]
    assert arch.by_elf_machine(EM_RISCV) is toy and arch.lookup("riscv64") is toy


def test_an_unknown_architecture_costs_a_warning_not_the_dump(tmp_path: Path) -> None:
    with open_dump(_riscv_elf(tmp_path / "a.elf")) as d:
        assert d.arch == "riscv" and d.cpus == []
        assert any("CPU state notes not decoded" in w and "riscv" in w for w in d.warnings)
