"""``vmci convert`` on a real arm64 guest (Debian's 6.1 arm64 kernel under ``qemu-system-aarch64
-machine virt -cpu cortex-a57``, KASLR, ``-device vmcoreinfo``): QEMU's ELF and kdump-zlib dumps
become kdump files (several dump levels and codecs) and ELF files the peers open, with the
architecture named.

Oracles, none of them vmci's reader:

* QEMU's own ELF of the same stopped moment, read with ``struct`` alone (its program headers):
  every page Debian's libkdumpfile 0.5.1 (``/usr/bin/python3``) reads from a converted file
  through ``KDUMP_KPHYSADDR`` equals it;
* the guest's own words (``facts.json``): the release, which libkdumpfile reads from
  ``init_uts_ns`` through its own arm64 translation (``KDUMP_KVADDR``: ``swapper_pg_dir`` and
  ``kimage_voffset`` from the VMCOREINFO) and drgn 0.3.0 (PyPI) through its own, given nothing
  but the converted file (``init_uts_ns``'s address is the guest note's, as ``pmemsave`` copied
  it); "Kernel code"/"Kernel data" of ``/proc/iomem``; the serial console's lines;
* ``vmci dmesg`` of QEMU's source dump (the converted file must say the same).

Page filtering (dump levels 2/4/8/16 read ``struct page``): makedumpfile in Debian amd64 is built
for x86_64 only (1.7.2 on a converted arm64 kdump: "vtop4_x86_64: Can't get the symbol of
init_level4_pgt/init_top_pgt", then "check_release: Can't get the address of system_utsname"), so
it cannot be the oracle here as it is for x86 (``test_convert_real.py``).  The excluded pages are
checked for plausibility against the guest's facts instead: never a page of the kernel's text
("Kernel code" of ``/proc/iomem``) or of its data ("Kernel data", which holds the static printk
buffer) but the boot page tables the kernel frees, never the page of the VMCOREINFO note or the
pages where QEMU's ELF holds the console's first lines inside the kernel's data; the free pages fit
in ``MemTotal``; the ELF and the kdump-zlib source (the same stopped VM) give the same set; and
each ``struct page`` array is where arm64 puts it
(``vmemmap = VMEMMAP_START - (memstart_addr >> PAGE_SHIFT)``, ``arch/arm64/include/asm/memory.h``),
from the kernel's own ``NUMBER(VMEMMAP_START)`` and ``NUMBER(PHYS_OFFSET)``.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_libkdumpfile
from vmci.convert import convert
from vmci.core.headers import ElfHeader, KdumpHeader
from vmci.formats import open_dump
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.testing.qemu import RealGuest

pytestmark = [pytest.mark.realworld, pytest.mark.interop]

PAGE = 4096
ZERO_SHA1 = hashlib.sha1(bytes(PAGE)).hexdigest()
#: (source, target, dump level, codec): every source, both targets, several levels and codecs
CASES = [
    ("elf", "kdump", 1, "zlib"),
    ("elf", "kdump", 31, "lzo"),
    ("elf", "elf", 31, "none"),
    ("kdump_zlib", "kdump", 31, "zstd"),
    ("kdump_zlib", "kdump", 16, "snappy"),
    ("kdump_zlib", "kdump", 10, "none"),
    ("kdump_zlib", "elf", 0, "none"),
]

LKF = r"""
import hashlib, json, sys, kdumpfile
lo, hi, uts = int(sys.argv[1], 16), int(sys.argv[2], 16), int(sys.argv[3], 16)
out = {}
for path in sys.argv[4:]:
    k = kdumpfile.kdumpfile(path)
    k.attr["addrxlat.ostype"] = "linux"
    pages = {}
    for pa in range(lo, hi, 4096):
        try:
            pages[pa // 4096] = hashlib.sha1(k.read(kdumpfile.KDUMP_KPHYSADDR, pa, 4096)).hexdigest()
        except kdumpfile.exceptions.NoDataException:
            continue
    out[path] = {"arch": str(k.attr["arch.name"]), "page_size": int(k.attr["arch.page_size"]),
                 "release": str(k.attr["linux.uts.release"]), "pages": pages,
                 "uts": bytes(k.read(kdumpfile.KDUMP_KVADDR, uts, 65)).split(b"\0")[0].decode()}
json.dump(out, sys.stdout)
"""

DRGN = r"""
import sys, drgn
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
print(prog.platform.arch.name, prog.read(int(sys.argv[2], 16), 65).split(b"\0")[0].decode())
"""


def qemu_elf_pages(path: Path) -> dict[str, str]:
    """SHA-1 of every page of QEMU's (non-paging) arm64 ELF by PFN, read with ``struct`` alone from
    its program headers (System V ABI; little-endian ELFCLASS64)."""
    with path.open("rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        pages: dict[str, str] = {}
        for i in range(phnum):
            p_type, _, p_offset, _, p_paddr, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", table,
                                                                                 i * phentsize)
            if p_type != 1:
                continue
            f.seek(p_offset)
            for off in range(0, p_filesz - PAGE + 1, PAGE):
                pages[str((p_paddr + off) // PAGE)] = hashlib.sha1(f.read(PAGE)).hexdigest()
    return pages


def _iomem(guest: RealGuest, what: str) -> list[tuple[int, int]]:
    out = []
    for line in guest.facts["guest"]["iomem"]:
        m = re.fullmatch(r"\s*([0-9a-f]+)-([0-9a-f]+) : (.*)", line)
        if m and m.group(3) == what:
            out.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
    return out


def _uts_release_va(guest: RealGuest) -> int:
    """``init_uts_ns.name.release``, from the guest's own note (QEMU's ``pmemsave`` copy)."""
    text = VmcoreInfo.parse(guest.note_desc)
    base = text.symbol("init_uts_ns")
    assert base is not None
    return base + (text.offset("uts_namespace", "name") or 0) + 2 * 65


@pytest.fixture(scope="module")
def converted(arm64_with_device: RealGuest,
              tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[Any, ...], Any]:
    """Each case converted once: (path, ConvertResult)."""
    out = tmp_path_factory.mktemp("convert-arm64")
    made = {}
    for case in CASES:
        source, target, level, codec = case
        path = out / f"{source}-d{level}-{codec}.{target}"
        made[case] = (path, convert(arm64_with_device[source], path, to=target, level=level, compress=codec))
    return made


@pytest.fixture(scope="module")
def lkf(arm64_with_device: RealGuest, converted: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    py = need_libkdumpfile()
    lo, hi = arm64_with_device.facts["system_ram"][0]
    paths = [str(p) for p, _ in converted.values()]
    uts = _uts_release_va(arm64_with_device)
    r = subprocess.run([py, "-c", LKF, f"{lo:x}", f"{hi:x}", f"{uts:x}", *paths], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(json.loads(r.stdout))


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_libkdumpfile_opens_the_converted_arm64_dump(case: tuple[Any, ...], arm64_with_device: RealGuest,
                                                    converted: dict[tuple[Any, ...], Any],
                                                    lkf: dict[str, Any]) -> None:
    g = arm64_with_device
    _, target, level, codec = case
    path, result = converted[case]
    assert not [r for r in result.repairs if r.startswith("phys_base")], result.repairs
    assert result.warnings == [] and result.arch == "aarch64"
    seen = lkf[str(path)]
    assert (seen["arch"], seen["page_size"]) == ("aarch64", PAGE)
    assert seen["release"] == seen["uts"] == g.facts["release"]  # the header's utsname; the KVADDR read
    reference = qemu_elf_pages(g["elf"])
    lo, hi = g.facts["system_ram"][0]
    ram = {str(pfn) for pfn in range(lo // PAGE, hi // PAGE)}
    got = seen["pages"]
    excluded = sum(result.excluded.values())
    if target == "kdump":
        with open_dump(path) as d:
            h = d.header
            assert isinstance(h, KdumpHeader) and h.block_size == PAGE and h.compression == codec
            assert h.phys_base == VmcoreInfo.parse(g.note_desc).number("PHYS_OFFSET")
        assert len(ram - set(got)) == excluded
        wrong = [pfn for pfn, sha in got.items() if sha != reference[pfn]]
    else:
        with open_dump(path) as d:
            assert isinstance(d.header, ElfHeader) and d.header.e_machine == "EM_AARCH64"
        # an excluded page lies in a PT_LOAD's p_memsz beyond p_filesz: libkdumpfile zero-fills the
        # last page of such a tail (the ELF rule) and reports the others missing
        wrong = [pfn for pfn, sha in got.items() if sha != reference[pfn] and sha != ZERO_SHA1]
        assert len(ram - set(got)) <= excluded
    assert not wrong, wrong[:10]
    if level & 16:
        assert result.excluded["free"] > 0
    if level == 0:
        assert result.excluded == {} and set(got) == ram


@pytest.mark.parametrize("source", ["elf", "kdump_zlib"])
def test_drgn_and_vmci_dmesg_on_the_converted_kdump(source: str, arm64_with_device: RealGuest,
                                                    converted: dict[tuple[Any, ...], Any]) -> None:
    g = arm64_with_device
    path = next(p for (src, target, _, _), (p, _) in converted.items() if src == source and target == "kdump")
    r = subprocess.run([sys.executable, "-c", DRGN, str(path), f"{_uts_release_va(g):x}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.split() == ["AARCH64", g.facts["release"]]

    def dmesg(p: Path) -> str:
        out = subprocess.run([sys.executable, "-m", "vmci.cli", "dmesg", str(p)], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-1500:]
        return out.stdout

    log = dmesg(path)
    assert log == dmesg(g[source]) and "Booting Linux on physical CPU" in log


def test_filtering_is_plausible_against_the_guests_facts(arm64_with_device: RealGuest,
                                                          tmp_path: Path) -> None:
    """See the module docstring: makedumpfile cannot be the oracle for an arm64 guest."""
    g = arm64_with_device
    sets, counts = {}, {}
    for source in ("elf", "kdump_zlib"):
        out = tmp_path / f"{source}.kdump"
        result = convert(g[source], out, level=30)
        with open_dump(out) as d:
            assert isinstance(d.header, KdumpHeader)
            runs = list(d.memory.page_runs())
            lo, hi = g.facts["system_ram"][0]
            kept = {pfn for a, b in runs for pfn in range(a, b)}
            sets[source] = set(range(lo // PAGE, hi // PAGE)) - kept
        counts[source] = result.excluded
    assert sets["elf"] == sets["kdump_zlib"] and counts["elf"] == counts["kdump_zlib"]
    excluded, count = sets["elf"], counts["elf"]
    assert set(count) <= {"cache", "cache_private", "user", "free"} and sum(count.values()) == len(excluded)
    mem_total = int(g.facts["guest"]["meminfo"][0].split()[1]) * 1024 // PAGE
    assert mem_total // 2 < count["free"] <= mem_total  # an idle busybox guest: most of RAM is free
    (code_lo, code_hi), = _iomem(g, "Kernel code")
    (data_lo, data_hi), = _iomem(g, "Kernel data")
    assert not excluded & set(range(code_lo // PAGE, -(-code_hi // PAGE)))
    # [_sdata, _end) is kept but for its last pages: init_pg_dir, the boot-time tables at _end, which
    # paging_init() gives back to the page allocator (arch/arm64/mm/mmu.c, 6.1) and which may be
    # reused (here: page cache); the __init pages between the two ranges are freed as well
    in_data = sorted(excluded & set(range(data_lo // PAGE, -(-data_hi // PAGE))))
    assert len(in_data) <= 8 and in_data == list(range(data_hi // PAGE - len(in_data), data_hi // PAGE))
    assert g.facts["vmcoreinfo_paddr"] // PAGE not in excluded
    # the console's first line where the kernel's data holds it (the printk ring)
    line = b"Booting Linux on physical CPU"
    hits = []
    with g["elf"].open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        phoff, = struct.unpack_from("<Q", raw, 32)
        phentsize, phnum = struct.unpack_from("<HH", raw, 54)
        found = [m.start() for m in re.finditer(re.escape(line), raw)]
        for i in range(phnum):
            p_type, _, p_offset, _, p_paddr, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", raw,
                                                                                 phoff + i * phentsize)
            if p_type == 1:
                hits += [p_paddr + at - p_offset for at in found if p_offset <= at < p_offset + p_filesz]
    in_data = [pa for pa in hits if data_lo <= pa < data_hi]
    assert in_data and not {pa // PAGE for pa in in_data} & excluded
    # the struct page arrays are where arm64's vmemmap puts them
    from vmci.discover.run import find_vmcoreinfo
    from vmci.kernel.mm import memory_model
    from vmci.kernel.vmem import KernelMemory

    text = VmcoreInfo.parse(g.note_desc)
    start, phys_offset, size = (text.number("VMEMMAP_START"), text.number("PHYS_OFFSET"), text.size("page"))
    assert start is not None and phys_offset is not None and size is not None
    memstart = phys_offset - (1 << 64) if phys_offset >> 63 else phys_offset
    vmemmap = (start - (memstart >> 12) * size) & ((1 << 64) - 1)
    with open_dump(g["kdump_zlib"]) as d:
        chosen = find_vmcoreinfo(d).chosen
        assert chosen is not None and chosen.text is not None
        model = memory_model(KernelMemory.from_dump(d, chosen.text), hi // PAGE)
    assert model.model == "sparsemem-extreme"
    assert [m.mem_map for m in model.maps] == [(vmemmap + m.pfn_start * size) & ((1 << 64) - 1)
                                               for m in model.maps]
    assert model.maps[0].pfn_start == lo // PAGE and model.maps[-1].pfn_end == hi // PAGE
