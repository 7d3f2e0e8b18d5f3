"""``vmci convert`` on real Debian 6.1 guests under QEMU 7.2: every dump QEMU writes (ELF, paging ELF,
kdump-zlib, migration stream; with and without ``-device vmcoreinfo``; KASLR and ``nokaslr``)
becomes a kdump file and an ELF file that the peers open.

Oracles, none of them vmci's reader: ``crash --osrelease``; Debian's libkdumpfile (architecture,
the VMCOREINFO equal to the guest's own buffer as QEMU's ``pmemsave`` copied it, every page it
reads equal to libkdumpfile's read of QEMU's own ELF of the same stopped moment); drgn 0.3.0 with
no arguments but the file (the release in ``init_uts_ns`` through the VMCOREINFO's kallsyms);
``makedumpfile --dump-dmesg`` (the guest's log, byte for byte as vmci formats it from the source);
and the guest's own ``phys_base``.  Filtering: the pages vmci excludes at each dump level are the
pages makedumpfile 1.7.2 excludes from the same memory (its output's bitmap and shared zero page).
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import need_libkdumpfile, need_tool
from vmci.convert import convert
from vmci.convert.filters import struct_page_exclusion, zero_pages
from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.kernel.printk import format_dmesg, get_printk_records
from vmci.kernel.vmem import KernelMemory
from vmci.testing.qemu import RealGuest

pytestmark = [pytest.mark.realworld, pytest.mark.interop]

SCENARIOS = ["with_device", "without_device", "nokaslr"]
SOURCES = ["elf", "elf_paging", "kdump_zlib", "migration"]
TARGETS = {"kdump": "kdump", "elf": "elf"}
PAGE = 4096
ZERO_SHA1 = hashlib.sha1(bytes(PAGE)).hexdigest()

LKF_PAGES = r"""
import hashlib, json, sys, kdumpfile
out = {}
for path in sys.argv[1:]:
    k = kdumpfile.kdumpfile(path)
    k.attr["addrxlat.ostype"] = "linux"
    pages = {}
    for pfn in range(65536):  # 256 MiB guests
        try:
            data = k.read(kdumpfile.KDUMP_KPHYSADDR, pfn * 4096, 4096)
        except kdumpfile.exceptions.NoDataException:
            continue
        pages[pfn] = hashlib.sha1(data).hexdigest()
    out[path] = {"arch": str(k.attr["arch.name"]), "vmcoreinfo": bytes(k.attr["linux.vmcoreinfo.raw"]).hex(),
                 "release": str(k.attr["linux.uts.release"]), "pages": pages}
json.dump(out, sys.stdout)
"""

DRGN_RELEASE = r"""
import sys, drgn
from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms
prog = drgn.Program()
prog.set_core_dump(sys.argv[1])
prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
sym = prog.symbol("init_uts_ns")
print(prog.read(sym.address + 130, 65).split(b"\0")[0].decode())
"""


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def converted() -> dict[tuple[str, str, str], Path]:
    """(scenario, source, target) -> the converted file, made on first use (dump level 31)."""
    return {}


def _convert(request: pytest.FixtureRequest, made: dict[tuple[str, str, str], Path], out_dir: Path,
             scenario: str, source: str, target: str) -> tuple[RealGuest, Path]:
    guest: RealGuest = request.getfixturevalue(scenario)
    key = (scenario, source, target)
    if key not in made:
        path = out_dir / f"{scenario}-{source}.{target}"
        convert(guest[source], path, to=TARGETS[target], level=31)
        made[key] = path
    return guest, made[key]


def qemu_elf_pages(path: Path) -> dict[str, str]:
    """SHA-1 of every page of QEMU's own (non-paging) ELF dump, by PFN, read with ``struct`` alone
    from its program headers (System V ABI): the byte oracle, independent of every reader tested."""
    data = path.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    pages: dict[str, str] = {}
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type, _, p_offset, _, p_paddr, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, at)
        if p_type != 1:
            continue
        for off in range(0, p_filesz - PAGE + 1, PAGE):
            pfn = (p_paddr + off) // PAGE
            if pfn < 65536:
                pages[str(pfn)] = hashlib.sha1(data[p_offset + off:p_offset + off + PAGE]).hexdigest()
    return pages


@pytest.fixture(scope="module")
def reference_pages(request: pytest.FixtureRequest) -> dict[str, dict[str, str]]:
    """The page hashes of each scenario's QEMU ELF (the VM was stopped: every dump holds the same)."""

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, scenario: str) -> dict[str, str]:
            guest: RealGuest = request.getfixturevalue(scenario)
            self[scenario] = qemu_elf_pages(guest["elf"])
            return self[scenario]  # type: ignore[no-any-return]

    return Lazy()


def _lkf(paths: list[Path]) -> dict[str, dict]:  # type: ignore[type-arg]
    py = need_libkdumpfile()
    r = subprocess.run([py, "-c", LKF_PAGES, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def guest_logs(request: pytest.FixtureRequest) -> dict[str, bytes]:
    """The kernel log as vmci formats it from the scenario's QEMU ELF (what makedumpfile must print)."""

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, scenario: str) -> bytes:
            guest: RealGuest = request.getfixturevalue(scenario)
            with open_dump(guest["elf"]) as d:
                text = find_vmcoreinfo(d).chosen.text  # type: ignore[union-attr]
                self[scenario] = format_dmesg(get_printk_records(KernelMemory.from_dump(d, text)))
            return self[scenario]  # type: ignore[no-any-return]

    return Lazy()


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_peers_open_the_converted_dumps(scenario: str, source: str, request: pytest.FixtureRequest,
                                        converted: dict[tuple[str, str, str], Path], out_dir: Path,
                                        reference_pages: dict[str, dict[str, str]],
                                        guest_logs: dict[str, bytes]) -> None:
    crash, mdf = need_tool("crash"), need_tool("makedumpfile")
    drgn = pytest.importorskip("drgn")
    outputs = {}
    for target in TARGETS:
        guest, outputs[target] = _convert(request, converted, out_dir, scenario, source, target)
    release = guest.facts["release"]
    lkf = _lkf(list(outputs.values()))
    reference = reference_pages[scenario]
    for target, path in outputs.items():
        # crash reads the OSRELEASE of the VMCOREINFO where it looks for it (note / kdump header)
        r = subprocess.run([crash, "--osrelease", str(path)], capture_output=True, text=True, timeout=120)
        assert r.stdout.strip() == release, (target, r.stdout, r.stderr)
        # libkdumpfile: the architecture, the guest's own VMCOREINFO text, and the pages themselves
        seen = lkf[str(path)]
        assert seen["arch"] == "x86_64" and seen["release"] == release
        assert bytes.fromhex(seen["vmcoreinfo"]) == guest.note_desc
        assert len(seen["pages"]) > 15000
        # an ELF's excluded page lies in a PT_LOAD's p_memsz beyond p_filesz: libkdumpfile 0.5.1
        # zero-fills the last page of such a tail (the ELF rule) and reports the others missing
        kept = lkf[str(outputs["kdump"])]["pages"]
        wrong = [pfn for pfn, h in seen["pages"].items()
                 if h != reference.get(pfn, h) and not (pfn not in kept and h == ZERO_SHA1)]
        assert not wrong, (target, wrong[:10])
        # drgn, given nothing but the file
        r = subprocess.run([_python(), "-c", DRGN_RELEASE, str(path)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == release, r.stderr[-1500:]
        # makedumpfile reads the kernel log through the page tables and mem_section
        log = out_dir / f"{path.name}.dmesg"
        log.unlink(missing_ok=True)
        r = subprocess.run([mdf, "--dump-dmesg", str(path), str(log)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert log.read_bytes() == guest_logs[scenario]
    # the true phys_base in the kdump header (QEMU writes its hexadecimal misreading, or 0 without a note)
    with open_dump(outputs["kdump"]) as d:
        assert d.header.phys_base_signed == guest.facts["phys_base"]  # type: ignore[attr-defined]
        assert d.header.converted is not None and d.header.converted.dump_level == 31  # type: ignore[attr-defined]
    assert drgn is not None


def _python() -> str:
    import sys

    return sys.executable


def _pfns(bits: bytes) -> set[int]:
    return set(np.flatnonzero(np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")).tolist())


def _mdf_excluded(path: Path) -> tuple[set[int], set[int], int]:
    """(PFNs makedumpfile's kdump file leaves out of its 2nd bitmap, PFNs stored as its shared zero
    page when it wrote one, its max_mapnr), read with ``struct`` and numpy alone from the layout of
    makedumpfile's ``diskdump_mod.h``."""
    with path.open("rb") as f:
        head = f.read(464)
        bs, sub_blocks, bitmap_blocks, max_mapnr = struct.unpack_from("<iiII", head, 428)
        f.seek(bs)
        sub = f.read(112)
        max_mapnr = struct.unpack_from("<Q", sub, 96)[0] or max_mapnr  # max_mapnr_64 (v6)
        f.seek((1 + sub_blocks) * bs)
        bitmaps = f.read(bitmap_blocks * bs)
        half = len(bitmaps) // 2
        bits = np.unpackbits(np.frombuffer(bitmaps, np.uint8), bitorder="little").astype(bool)
        b1, b2 = bits[:max_mapnr], bits[half * 8:half * 8 + max_mapnr]
        dumped = np.flatnonzero(b2)
        f.seek((1 + sub_blocks + bitmap_blocks) * bs)
        desc = np.dtype([("off", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("pf", "<u8")])
        descs = np.frombuffer(f.read(24 * len(dumped)), dtype=desc)
    zero_off = int(descs["off"].min())  # makedumpfile writes its zero page first
    zero = set(dumped[descs["off"] == zero_off].tolist())
    return set(np.flatnonzero(b1 & ~b2).tolist()), zero, max_mapnr


@pytest.mark.parametrize("scenario", ["with_device", "nokaslr"])
def test_filtering_equals_makedumpfile(scenario: str, request: pytest.FixtureRequest, out_dir: Path) -> None:
    """On the same memory, page for page: vmci's excluded set at each level is makedumpfile's."""
    mdf = need_tool("makedumpfile")
    guest: RealGuest = request.getfixturevalue(scenario)
    vmcore = out_dir / f"{scenario}.vmcore"
    convert(guest["elf"], vmcore, to="kexec-elf", level=0)  # makedumpfile refuses QEMU 7.2's own ELF
    with open_dump(guest["elf"]) as d:
        text = find_vmcoreinfo(d).chosen.text  # type: ignore[union-attr]
        kmem = KernelMemory.from_dump(d, text)
        # the rewrite is a /proc/vmcore to vmcore-dmesg too (it resolves symbols through PT_LOADs)
        r = subprocess.run([need_tool("vmcore-dmesg"), str(vmcore)], capture_output=True, timeout=120)
        assert r.returncode == 0 and r.stdout == format_dmesg(get_printk_records(kmem), style="vmcore-dmesg")
        zeros = zero_pages(d.memory)
        for level in (1, 2, 4, 8, 16, 31):
            made = out_dir / f"{scenario}.d{level}"
            made.unlink(missing_ok=True)
            r = subprocess.run([mdf, "-d", str(level), str(vmcore), str(made)], capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            theirs, theirs_zero, max_mapnr = _mdf_excluded(made)
            if not level & 1:
                theirs_zero = set()  # a shared zero page is written at -d 1 only
            ex = struct_page_exclusion(kmem, d.memory, level)
            # makedumpfile ends max_mapnr at the last mem_map (the BIOS ROM at 4 GiB is outside)
            ours = {p for p in _pfns(bytes(ex.bitmap.bits)) if p < max_mapnr}
            ours_zero = {p for p in _pfns(bytes(zeros.bits)) if p < max_mapnr} - ours if level & 1 else set()
            assert ours == theirs, (level, len(ours), len(theirs), sorted(ours ^ theirs)[:10])
            assert ours_zero == theirs_zero, (level, len(ours_zero), len(theirs_zero))
            if level == 31:
                assert len(ours) > 40000 and len(theirs_zero) > 1000
