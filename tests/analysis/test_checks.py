"""Named consistency verdicts, on dumps made by the writers."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmci.analysis import checks as checks_mod
from vmci.analysis.checks import (
    CHECKS,
    QEMU_PHYS_BASE_BUG,
    CheckContext,
    check,
    qemu_hex_phys_base,
    run_checks,
    worst,
)
from vmci.analysis.result import CheckResult
from vmci.core.dump import Dump
from vmci.core.memory import Range, SparseMemory
from vmci.discover.run import find_vmcoreinfo
from vmci.formats import open_dump
from vmci.formats.elf import write_elf
from vmci.formats.kdump import write_kdump
from vmci.formats.notes import encode_notes, find_desc
from vmci.producer.linux import KernelLayout, vmcoreinfo_text

MiB = 1 << 20
QEMU_72_HEADER = 0xFFFFFFFCB9FCFF80  # seen in a real QEMU 7.2 dump, guest phys_base -346030080


def kdump(tmp_path: Path, text: bytes, *, phys_base: int = 0, release: str = "") -> Dump:
    mem = SparseMemory([Range(0, 8 * MiB)])
    mem.write(0x200000, b"\x42" * 4096)
    blob = encode_notes([("CORE", 1, bytes(336)), ("VMCOREINFO", 0, text)])
    path = tmp_path / "d.kdump"
    with path.open("wb") as f:
        write_kdump(f, mem, blob, vmcoreinfo_span=find_desc(blob, "VMCOREINFO"), phys_base=phys_base,
                    utsname={"machine": "x86_64", "release": release}, compression="none")
    return open_dump(path)


def checks(d: Dump) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in run_checks(d, find_vmcoreinfo(d))}


def test_qemu_hex_parse_reproduces_the_real_header() -> None:
    assert qemu_hex_phys_base("-346030080") == QEMU_72_HEADER
    assert qemu_hex_phys_base("16777216") == 0x16777216
    assert qemu_hex_phys_base("0") == 0
    assert qemu_hex_phys_base("zz") is None


def test_qemu_phys_base_bug_is_named(tmp_path: Path) -> None:
    text = vmcoreinfo_text(KernelLayout(phys_base=-346030080))
    assert b"NUMBER(phys_base)=-346030080\n" in text
    with kdump(tmp_path, text, phys_base=QEMU_72_HEADER) as d:
        got = checks(d)
        assert "kdump-phys-base" not in got
        status, detail = got[QEMU_PHYS_BASE_BUG]
        assert status == "WARN" and "parsed as hex" in detail and "-346030080" in detail


@pytest.mark.parametrize(("header", "status"), [(-346030080, "PASS"), (0, "WARN"), (0x1000000, "FAIL")])
def test_phys_base_other_cases(tmp_path: Path, header: int, status: str) -> None:
    text = vmcoreinfo_text(KernelLayout(phys_base=-346030080))
    with kdump(tmp_path, text, phys_base=header) as d:
        assert checks(d)["kdump-phys-base"][0] == status


def test_utsname_vs_osrelease(tmp_path: Path) -> None:
    text = vmcoreinfo_text(KernelLayout(phys_base=0))
    rel = KernelLayout().osrelease
    with kdump(tmp_path, text, release=rel) as d:
        assert checks(d)["utsname-vs-osrelease"][0] == "PASS"
    with kdump(tmp_path, text, release="") as d:
        assert checks(d)["utsname-vs-osrelease"] == ("PASS", checks(d)["utsname-vs-osrelease"][1])
    with kdump(tmp_path, text, release="5.10.0-wrong") as d:
        status, detail = checks(d)["utsname-vs-osrelease"]
        assert status == "FAIL" and "5.10.0-wrong" in detail


def test_kdump_note_vs_header_pass_and_lint(tmp_path: Path) -> None:
    with kdump(tmp_path, vmcoreinfo_text(KernelLayout(phys_base=0))) as d:
        got = checks(d)
        assert got["kdump-vmcoreinfo-vs-notes"][0] == "PASS"
        assert got["sources-agree"][0] == "PASS" and "elf-note, kdump-header" in got["sources-agree"][1]
        assert got["vmcoreinfo-lint"][0] == "PASS" and got["kaslr-keys"][0] == "PASS"
        assert got["strategy:elf-note"][0] == "PASS"


def test_lint_and_missing_kaslr_keys_warn(tmp_path: Path) -> None:
    text = b"OSRELEASE=6.1.0\r\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff8260a000"
    with kdump(tmp_path, text) as d:
        got = checks(d)
        assert got["vmcoreinfo-lint"][0] == "WARN" and "crlf" in got["vmcoreinfo-lint"][1]
        assert got["kaslr-keys"][0] == "WARN" and "KERNELOFFSET" in got["kaslr-keys"][1]


def test_checks_are_registered_in_report_order() -> None:
    assert [c.name for c in CHECKS] == [
        "strategy", "sources-agree", "kdump-vmcoreinfo-vs-notes", "kdump-phys-base", "utsname-vs-osrelease",
        "address-blob-vs-acpi", "given-vs-saved-state", "fw-cfg-record-vs-note", "raw-base",
        "note-size-vs-record", "vmcoreinfo-lint", "kaslr-keys"]
    assert all(c.doc for c in CHECKS)
    with pytest.raises(ValueError, match="registered twice"):
        check("sources-agree")(lambda ctx: ())


def test_applicability_and_a_new_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elf = tmp_path / "d.elf"
    text = vmcoreinfo_text(KernelLayout(phys_base=0))
    with elf.open("wb") as f:
        write_elf(f, SparseMemory([Range(0, 8 * MiB)]), encode_notes([("VMCOREINFO", 0, text)]))
    with open_dump(elf) as d:
        assert not {"kdump-vmcoreinfo-vs-notes", "kdump-phys-base", "utsname-vs-osrelease"} & set(checks(d))
    monkeypatch.setattr(checks_mod, "CHECKS", list(CHECKS))

    @check("release-known", applies=lambda ctx: ctx.text is not None)
    def _release(ctx: CheckContext) -> list[CheckResult]:
        assert ctx.text is not None
        return [CheckResult("release-known", "PASS", f"{ctx.text.osrelease}")]

    with kdump(tmp_path, text) as d:
        got = run_checks(d, find_vmcoreinfo(d))
    assert got[-1] == CheckResult("release-known", "PASS", KernelLayout().osrelease)
    assert worst(got) == "PASS" and worst([]) == "PASS"
