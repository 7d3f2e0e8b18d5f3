"""Generated arm64 dumps in the real tools that support arm64: readelf (binutils), Debian's
libkdumpfile (0.5.1, architecture set by hand: QEMU's kdump header names none) and drgn 0.3.0
through ``vmci drgn``'s platform.

Observed limits of the peers, asserted so that a change shows: libkdumpfile 0.5.1 reads the ELF's
physical memory but takes QEMU's arm64 kdump PFNs (64 KiB blocks) for 4 KiB ones ("Out-of-bounds
PFN"), and it cannot translate kernel addresses without knowing the OS ("Cannot determine
VA_BITS"); drgn's wheel (libkdumpfile 0.5.6) fails the same kdump, so ``vmci drgn`` serves its
memory itself.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import need_libkdumpfile, need_tool

pytestmark = pytest.mark.interop

Dump = Callable[..., tuple[Path, Any]]

SCRIPT = r"""
import json, sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
if k.attr.get("arch.name") is None:
    k.attr["arch.name"] = "aarch64"
out = {"arch": k.attr.get("arch.name"), "format": k.attr["file.format"]}
try:
    out["raw"] = bytes(k.attr["linux.vmcoreinfo.raw"]).hex()
except Exception as e:
    out["raw"] = type(e).__name__
try:
    out["uts"] = bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, int(sys.argv[2]), 64)).hex()
except Exception as e:
    out["uts"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""


def _libkdumpfile(path: Path, paddr: int) -> dict[str, Any]:
    py = need_libkdumpfile()
    r = subprocess.run([py, "-c", SCRIPT, str(path), str(paddr)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_libkdumpfile_reads_the_arm64_elf(vmci_dump: Dump) -> None:
    path, truth = vmci_dump("elf", arch="aarch64", seed=5)
    got = _libkdumpfile(path, truth["kernel"]["uts_paddr"])
    assert got["arch"] == "aarch64" and got["format"] == "elf"
    uts = bytes.fromhex(got["uts"])
    assert uts[:6] == b"Linux\0"
    text = path.read_bytes()
    assert bytes.fromhex(got["raw"]) in text  # the VMCOREINFO note's text, as vmci wrote it


def test_libkdumpfile_and_qemus_arm64_kdump(vmci_dump: Dump) -> None:
    path, truth = vmci_dump("kdump", arch="aarch64", seed=5)
    got = _libkdumpfile(path, truth["kernel"]["uts_paddr"])
    assert got["format"] == "diskdump" and got["arch"] == "aarch64"
    assert got["uts"].startswith("NoDataException: Out-of-bounds PFN")  # the peer's limit (see above)


def test_readelf_reads_the_arm64_elf(vmci_dump: Dump) -> None:
    readelf = need_tool("readelf")
    for order in ("little", "big"):
        path, _ = vmci_dump("elf", arch="aarch64", byteorder=order, cpus=3)
        out = subprocess.run([readelf, "-h", "-n", "-l", str(path)], capture_output=True, text=True,
                             check=True).stdout
        assert re.search(r"Machine:\s+AArch64", out)
        assert ("big endian" in out) == (order == "big")
        assert out.count("NT_PRSTATUS") == 3 and out.count("NT_FPREGSET") == 3
        assert re.search(r"LOAD\s+0x[0-9a-f]+ 0x0*40000000 0x0*40000000", out)


@pytest.mark.parametrize("fmt", ["elf", "kdump-flat", "migration"])
def test_drgn_on_generated_arm64_dumps(vmci_dump: Dump, fmt: str) -> None:
    from vmci.integrations.drgn import program_from_dump

    path, truth = vmci_dump(fmt, arch="aarch64", seed=6)
    prog = program_from_dump(path)
    assert prog.platform.arch.name == "AARCH64"
    assert prog.cache["vmci"]["route"] == ("core-dump" if fmt == "elf" else "custom")
    release = prog.read(truth["kernel"]["uts_release_vaddr"], 65).split(b"\0", 1)[0].decode()
    assert release == truth["kernel"]["osrelease"]


@pytest.mark.parametrize("fmt", ["elf", "kdump"])
def test_drgn_on_a_synthesized_arm64_vmcoreinfo(vmci_dump: Dump, fmt: str) -> None:
    """No note left: vmci synthesizes one from swapper_pg_dir found in memory (VA_BITS,
    kimage_voffset, PHYS_OFFSET, TCR_EL1_T1SZ, KERNELOFFSET) and drgn reads the kernel with it."""
    from vmci.integrations.drgn import program_from_dump

    path, truth = vmci_dump(fmt, arch="aarch64", seed=7, faults=["vmcoreinfo-lost"])
    prog = program_from_dump(path)
    assert prog.cache["vmci"]["synthesized"] is True
    release = prog.read(truth["kernel"]["uts_release_vaddr"], 65).split(b"\0", 1)[0].decode()
    assert release == truth["kernel"]["osrelease"]
