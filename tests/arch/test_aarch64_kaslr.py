"""arm64 KASLR and kernel reads on generated ``virt`` guests, every granule and VA size: from the
VMCOREINFO, and without it (the note lost) from ``swapper_pg_dir`` found in memory (QEMU's dumps)
or from ``TTBR1_EL1`` (migration streams).  The producer's truth is the oracle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmci.analysis.analyze import analyze
from vmci.analysis.kaslr import kaslr_for_dump, vmcoreinfo_for_kaslr
from vmci.formats import open_dump
from vmci.kernel.synthesize import synthesize
from vmci.kernel.vmem import KernelMemory

Dump = Callable[..., tuple[Path, Any]]
GEOMETRIES = [(4096, 48), (4096, 39), (16384, 47), (16384, 48), (65536, 42), (65536, 48), (65536, 52)]
ids = [f"{p // 1024}k-{v}" for p, v in GEOMETRIES]


@pytest.mark.parametrize(("page_size", "va_bits"), GEOMETRIES, ids=ids)
@pytest.mark.parametrize("fmt", ["elf", "kdump-flat", "migration"])
def test_kaslr_without_the_vmcoreinfo_equals_the_truth(vmci_dump: Dump, fmt: str, page_size: int,
                                                        va_bits: int) -> None:
    path, truth = vmci_dump(fmt, arch="aarch64", page_size=page_size, va_bits=va_bits,
                            seed=va_bits + page_size,
                            faults=["vmcoreinfo-lost"])
    k = truth["kernel"]
    with open_dump(path) as d:
        assert d.arch == "aarch64" and len(d.cpus) == 2
        rep = kaslr_for_dump(d, scan=True)
        assert rep.verdict == "page-tables-only", rep.page_tables_error
        assert (rep.kerneloffset, rep.phys_base) == (k["kaslr_offset"], k["phys_offset"])
        res = rep.result
        assert res is not None
        assert res.method == ("page-tables" if fmt == "migration" else "swapper-pg-dir-scan")
        t = res.tables
        assert (t.root, t.va_bits, t.page_size) == (k["pgd_paddr"], va_bits, page_size)
        assert res.text_va == k["stext_va"] and res.text_va - res.text_pa == k["kimage_voffset"]
        assert rep.corroboration["banner"]["release"] == k["osrelease"] and not rep.warnings
        syn = synthesize(d, report=rep).vmcoreinfo  # a text drgn would take
        assert syn.number("kimage_voffset") == k["kimage_voffset"] and syn.number("VA_BITS") == va_bits
        assert syn.pagesize == page_size and syn.symbol("swapper_pg_dir") == k["swapper_pg_dir"]


@pytest.mark.parametrize(("page_size", "va_bits"), GEOMETRIES, ids=ids)
def test_kernel_memory_from_the_vmcoreinfo(vmci_dump: Dump, page_size: int, va_bits: int) -> None:
    path, truth = vmci_dump("kdump-flat", arch="aarch64", page_size=page_size, va_bits=va_bits, seed=3)
    with open_dump(path) as d:
        vi, source = vmcoreinfo_for_kaslr(d)
        assert source == "elf-note" and vi is not None
        kmem = KernelMemory.from_dump(d, vi)
        assert kmem.setup.sources == {"kerneloffset": "VMCOREINFO KERNELOFFSET",
                                      "phys_base": "VMCOREINFO NUMBER(PHYS_OFFSET)"}
        assert (kmem.tables.root, kmem.page_size) == (truth["kernel"]["pgd_paddr"], page_size)
        k = truth["kernel"]
        assert kmem.read_cstring(k["uts_release_vaddr"], 65).decode() == k["osrelease"]
        assert kmem.read(truth["kernel"]["linux_banner"], 14) == b"Linux version "
        rep = kaslr_for_dump(d)
        assert rep.verdict == "agree" and rep.corroboration["swapper_pg_dir"]["ok"]


@pytest.mark.parametrize("fmt", ["elf", "kdump-flat", "migration"])
def test_big_endian_guest(vmci_dump: Dump, fmt: str) -> None:
    """QEMU reads the guest's note header in the target's (little-endian) order and drops a
    big-endian guest's note: the text comes from the memory scan, KASLR from the tables."""
    path, truth = vmci_dump(fmt, arch="aarch64", byteorder="big", page_size=65536, va_bits=48, seed=8)
    assert truth["dump"]["guest_note"]["warning"] == "Invalid guest note header"
    with open_dump(path) as d:
        assert d.byte_order == "big"
        rep = kaslr_for_dump(d, scan=True)
        assert rep.verdict == "agree" and rep.vmcoreinfo is not None
        assert rep.vmcoreinfo["source"] == ("fw-cfg-record" if fmt == "migration" else "memory-scan")
        k = truth["kernel"]
        assert (rep.kerneloffset, rep.phys_base) == (k["kaslr_offset"], k["phys_offset"])


def test_kpti_user_vcpu_holds_the_trampoline(vmci_dump: Dump) -> None:
    path, truth = vmci_dump("migration", arch="aarch64", pti=True, seed=4, faults=["vmcoreinfo-lost"])
    with open_dump(path) as d:
        assert d.cpus[1].regs["ttbr1_el1"] & 0xFFFFFFFFFFFF == truth["kernel"]["tramp_pg_dir_paddr"]
        rep = kaslr_for_dump(d)
        assert rep.result is not None and rep.kerneloffset == truth["kernel"]["kaslr_offset"]
        assert rep.result.cpus[0].skipped is None and "tramp_pg_dir" in (rep.result.cpus[1].skipped or "")


@pytest.mark.parametrize("kernel", ["5.10", "6.1"])
def test_text_before_and_after_5_11(vmci_dump: Dump, kernel: str) -> None:
    """Before 5.11 the image was mapped from _text (its header too); since, from _stext."""
    path, truth = vmci_dump("elf", arch="aarch64", kernel=kernel, kaslr=False, faults=["vmcoreinfo-lost"])
    with open_dump(path) as d:
        rep = kaslr_for_dump(d, scan=True)
        assert rep.kerneloffset == 0 and rep.result is not None
        assert rep.result.text_va == truth["kernel"]["text_va"] + (0 if kernel == "5.10" else 0x10000)


@pytest.mark.parametrize("fmt", ["elf", "kdump-flat", "migration"])
def test_analyze_knows_arm64(vmci_dump: Dump, fmt: str) -> None:
    """No x86 warnings: the header's phys_base is compared with PHYS_OFFSET, arm64's keys count."""
    path, truth = vmci_dump(fmt, arch="aarch64", seed=6)
    with open_dump(path) as d:
        res = analyze(d).to_dict()
    checks = {c["name"]: c for c in res["checks"]}
    keys = checks["kaslr-keys"]
    assert keys["status"] == "PASS" and "NUMBER(PHYS_OFFSET)" in keys["detail"]
    assert checks["vmcoreinfo-lint"]["status"] == "PASS"
    if fmt == "kdump-flat":
        assert checks["kdump-phys-base"]["status"] == "PASS"
        assert "PHYS_OFFSET" in checks["kdump-phys-base"]["detail"]
    assert res["kaslr"]["verdict"] == "agree" and res["kaslr"]["phys_base"] == truth["kernel"]["phys_offset"]
    assert res["status"] == "PASS", [c for c in res["checks"] if c["status"] != "PASS"]
