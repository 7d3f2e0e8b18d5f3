"""Issue 13, peak RSS flat: opening a kdump file (raw or flattened) and walking its memory leaves
no more than a few pages of it mapped in the process, however many page descriptors and bitmap
bytes the walk read.  The oracle is the kernel's own account of the mapping (``Rss:`` of the
file's lines in ``/proc/self/smaps``).

Before: the flattened record walk kept a page-cache folio of every record header mapped (4.3 MiB
on this 4 GiB guest, 25 MiB on a 64 GiB one), and a walk released only each window's own bytes
while a fault maps the whole folio around it (9 MiB of a 64 GiB guest's bitmaps and descriptors
stayed mapped)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.formats.kdump import write_kdump

GIB = 1 << 30
#: What may stay mapped: the header pages and a folio or two around the last read.
LIMIT_KIB = 128

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def mapped_kib(path: Path) -> int:
    """Resident KiB of every mapping of ``path`` in this process."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if not first.endswith(":"):  # a mapping's header line: "start-end perms offset dev inode path"
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


@pytest.mark.parametrize("flattened", [False, True], ids=["raw", "flattened"])
def test_walking_a_big_guest_leaves_the_file_unmapped(tmp_path: Path, flattened: bool) -> None:
    # a 4 GiB guest with a page of data every 64 MiB: 24 MiB of page descriptors, 128 KiB of bitmaps
    mem = SparseMemory([Range(0, 0xA0000), Range(0x100000, 4 * GIB - 0x100000)])
    for pa in range(0x100000, 4 * GIB, 64 << 20):
        mem.write(pa, b"\x5a" * 4096)
    path = tmp_path / "big.kdump"
    with path.open("wb") as f:
        write_kdump(f, mem, flattened=flattened)
    assert path.stat().st_size > 20 << 20
    with open_dump(path) as d:
        after_open = mapped_kib(path)
        runs = list(d.memory.runs())
        after_runs = mapped_kib(path)
        data = {addr: bytes(buf) for addr, buf in d.memory.data_chunks()}
        after_chunks = mapped_kib(path)
    assert max(after_open, after_runs, after_chunks) <= LIMIT_KIB, (after_open, after_runs, after_chunks)
    # the walk still sees what was written: every data page, and nothing else
    assert sorted(data) == list(range(0x100000, 4 * GIB, 64 << 20))
    assert all(v == b"\x5a" * 4096 for v in data.values())
    assert sum(r.size for r in runs) == 4 * GIB - 0x60000
