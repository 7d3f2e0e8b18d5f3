"""makedumpfile's own output, made from a real guest's memory, read by vmci.

QEMU 7.2's ELF is refused by makedumpfile 1.7.2, so the real guest's memory and notes are
rewritten by vmci as a kexec-style /proc/vmcore ELF first (which makedumpfile accepts: that is
itself a check of vmci's writer).  makedumpfile then filters with dump level 31 (zero, cache,
user and free pages excluded) into every form it writes: ELF (-E), kdump with zlib (-c), lzo (-l)
and no compression, the flattened stream (-F), and a split set (--split).  Every page vmci reads
from those files must equal the guest's; excluded pages must be reported as such.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from vmci.errors import ExcludedPageError, MemoryReadError
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.kdump import open_kdump_set
from vmci.formats.notes import encode_notes

pytestmark = pytest.mark.realworld


@pytest.fixture(scope="module")
def made(with_device, tmp_path_factory) -> dict[str, list[Path]]:
    mdf = shutil.which("makedumpfile")
    if mdf is None:
        pytest.skip("makedumpfile is not installed (Debian package makedumpfile)")
    tmp = tmp_path_factory.mktemp("makedumpfile")
    vmcore = tmp / "vmcore"
    with open_dump(with_device["elf"]) as d, vmcore.open("wb") as f:
        notes = [(n.name, n.type, n.desc) for n in d.notes if n.name in ("CORE", "VMCOREINFO")]
        write_elf(f, d.memory, encode_notes(notes), style="kexec")
    out: dict[str, list[Path]] = {}
    for name, opts in (("elf", ["-E"]), ("zlib", ["-c"]), ("lzo", ["-l"]), ("plain", [])):
        path = tmp / name
        r = subprocess.run([mdf, *opts, "-d", "31", str(vmcore), str(path)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = [path]
    flat = tmp / "flat"
    with flat.open("wb") as f:
        r = subprocess.run([mdf, "-F", "-c", "-d", "31", str(vmcore)], stdout=f, stderr=subprocess.PIPE,
                           timeout=300)
    assert r.returncode == 0, r.stderr
    out["flat"] = [flat]
    parts = [tmp / "part1", tmp / "part2", tmp / "part3"]
    r = subprocess.run([mdf, "--split", "-c", "-d", "31", str(vmcore), *map(str, parts)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out["split"] = parts
    out["vmcore"] = [vmcore]
    return out


def compare(dump, original) -> tuple[int, int]:
    """(pages equal to the original, pages reported excluded); any other outcome fails."""
    same = excluded = 0
    for r in original.ranges:
        for addr in range(r.start, r.end - 4095, 4096):
            try:
                page = dump.memory.read(addr, 4096)
            except ExcludedPageError:
                excluded += 1
                continue
            except MemoryReadError:
                excluded += 1  # makedumpfile's ELF leaves excluded pages out of every PT_LOAD
                continue
            assert page == original.read(addr, 4096), hex(addr)
            same += 1
    return same, excluded


@pytest.mark.parametrize("kind", ["elf", "zlib", "lzo", "plain", "flat"])
def test_vmci_reads_makedumpfile_output(made, with_device, kind):
    with open_dump(made["vmcore"][0]) as original, open_dump(made[kind][0]) as d:
        assert d.format == {"elf": "elf", "flat": "kdump-flattened"}.get(kind, "kdump")
        vmci_note = next(n for n in d.notes if n.name == "VMCOREINFO")
        assert vmci_note.desc == with_device.note_desc
        if kind != "elf":
            assert d.facts["dump_level"] == 31 and d.facts["header_version"] == 6
            assert d.facts["vmcoreinfo_text"] == with_device.note_desc
            assert d.facts["utsname"]["release"] == with_device.facts["release"]
            assert d.facts["compression"] == {"zlib": "zlib", "flat": "zlib", "lzo": "lzo"}.get(kind, "none")
        same, excluded = compare(d, original.memory)
        assert same > 1000 and excluded > 1000, (same, excluded)
        # the note page itself is kernel data: never filtered
        assert d.memory.read(with_device.vmcoreinfo_paddr, 4132) == with_device.note


def test_flattened_matches_its_rearranged_twin(made):
    with open_dump(made["flat"][0]) as flat, open_dump(made["zlib"][0]) as raw:
        a = list(itertools.islice(((x, bytes(p)) for x, p in flat.memory.pages()), 3000))
        b = list(itertools.islice(((x, bytes(p)) for x, p in raw.memory.pages()), 3000))
        assert a == b


def test_split_set(made):
    with open_dump(made["vmcore"][0]) as original, open_kdump_set(made["split"]) as d:
        assert d.format == "kdump-split" and len(d.facts["split_files"]) == 3
        same, excluded = compare(d, original.memory)
        assert same > 1000 and excluded > 1000
    with open_dump(made["split"][1]) as middle:
        assert middle.facts["split"] == 1 and middle.facts["start_pfn"] > 0
