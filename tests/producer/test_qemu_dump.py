"""QEMU's dump writer emulation and kexec's /proc/vmcore; real tools accept what it writes."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import need_libkdumpfile, need_tool

from vmci.errors import UsageError
from vmci.formats import open_dump
from vmci.producer.qemu_dump import GuestNote, StrtoxError, qemu_phys_base, qemu_strtou64
from vmci.producer.scenario import Scenario, build, generate

U64 = (1 << 64) - 1


def test_qemu_strtou64_semantics() -> None:
    assert qemu_strtou64("-346030080") == 0xFFFFFFFCB9FCFF80
    assert qemu_strtou64("346030080") == 0x346030080
    assert qemu_strtou64("0") == 0
    assert qemu_strtou64("0x10") == 16 and qemu_strtou64("+ff") == 255 and qemu_strtou64("  1A") == 26
    assert qemu_strtou64("-1") == U64
    assert qemu_strtou64("-0x1") == U64
    # "0x": glibc parses the 0 and stops at "x", so the string is not fully consumed
    for bad, errno in (("0x", "EINVAL"), ("", "EINVAL"), ("-", "EINVAL"), ("12z", "EINVAL"),
                       ("0xg", "EINVAL"), ("1" * 17, "ERANGE"), ("-" + "f" * 17, "ERANGE")):
        with pytest.raises(StrtoxError) as e:
            qemu_strtou64(bad)
        assert e.value.errno == errno, bad
    assert qemu_strtou64("777", 8) == 511
    with pytest.raises(UsageError):
        qemu_strtou64("1", 40)


def _note(text: bytes, name: bytes = b"VMCOREINFO\0") -> GuestNote:
    from vmci.formats.notes import encode_note

    return GuestNote("upstream", encode_note(name.rstrip(b"\0").decode(), 0, text), 0x1000, 4132, "x")


def test_phys_base_bug_and_fix() -> None:
    n = _note(b"OSRELEASE=6.1\nNUMBER(phys_base)=-346030080\nKERNELOFFSET=2a000000\n")
    assert qemu_phys_base(n) == (0xFFFFFFFCB9FCFF80, "NUMBER(phys_base)=-346030080 parsed as hexadecimal "
                                                     "(QEMU's bug)")
    assert qemu_phys_base(n, bug=False)[0] == -346030080 & U64
    assert qemu_phys_base(_note(b"NUMBER(phys_base)=16777216\n"))[0] == 0x16777216
    assert qemu_phys_base(_note(b"SYMBOL(phys_base)=ffffffff82a10010\n"))[0] == 0  # 4.9: no NUMBER
    assert qemu_phys_base(_note(b"NUMBER(phys_base)=12x\n"))[0] == 0  # parse error: stays 0
    assert qemu_phys_base(_note(b"NUMBER(phys_base)=1\n", name=b"VMCOREINFX\0"))[0] == 0
    assert qemu_phys_base(GuestNote("none"))[0] == 0


@pytest.fixture(scope="module")
def bug_dumps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bug")
    s = Scenario(seed=1, ram="512M", kaslr_offset=0x2A000000, phys_base=-346030080)
    return {
        "bug": generate(s, tmp / "bug.kdump", "kdump"),
        "flat": generate(s, tmp / "bug.flat", "kdump-flat"),
        "fixed": generate(Scenario(**{**s.to_dict(), "phys_base_bug": False}), tmp / "fixed.kdump", "kdump"),
    }


def test_kdump_header_reproduces_qemus_phys_base(bug_dumps) -> None:
    for key in ("bug", "flat"):
        t = bug_dumps[key]
        assert t["dump"]["phys_base"] == 0xFFFFFFFCB9FCFF80
        with open_dump(t.path) as d:
            assert d.facts["phys_base"] == 0xFFFFFFFCB9FCFF80
            assert d.facts["dump_level"] == 1 and d.facts["header_version"] == 6
            assert d.facts["utsname"]["machine"] == "x86_64" and d.facts["utsname"]["release"] == ""
            assert d.facts["timestamp"] == {"tv_sec": 0, "tv_usec": 0}
            text = d.facts["vmcoreinfo_text"]
            assert text.startswith(b"OSRELEASE=") and b"NUMBER(phys_base)=-346030080\n" in text
            assert d.notes[-1].desc == text
    with open_dump(bug_dumps["fixed"].path) as d:
        assert d.facts["phys_base_signed"] == -346030080


def test_notes_order_and_only_first_note_copied(tmp_path) -> None:
    t = generate(Scenario(seed=2, ram="32M", cpus=3), tmp_path / "d.elf", "elf")
    with open_dump(t.path) as d:
        assert [n.name for n in d.notes] == ["CORE"] * 3 + ["QEMU"] * 3 + ["VMCOREINFO"]
        assert [c.cr3 for c in d.cpus] == [t["cpus"][i]["cr3"] for i in range(3)]
        note = d.notes[-1]
        assert note.type == 0 and len(note.desc) == t["vmcoreinfo"]["text_size"]
    raw = t.path.read_bytes()
    # the note ends the PT_NOTE: no trailing 12-byte null note
    assert t["dump"]["notes"] == t["dump"]["memory_offset"] - t["dump"]["note_offset"]
    end = t["dump"]["memory_offset"]
    assert raw[end - 12 : end] != bytes(12)


def test_no_device_no_note_but_note_in_ram(tmp_path) -> None:
    t = generate(Scenario(seed=2, ram="32M", device="none"), tmp_path / "d.kdump", "kdump")
    assert not t["dump"]["guest_note"]["appended"]
    with open_dump(t.path) as d:
        assert [n.name for n in d.notes] == ["CORE", "CORE", "QEMU", "QEMU"]
        assert "vmcoreinfo_text" not in d.facts and d.facts["phys_base"] == 0
        assert d.memory.read(t["vmcoreinfo"]["note_paddr"] + 12, 11) == b"VMCOREINFO\0"
    assert t.expected("memory-scan")["found"] and not t.expected("elf-note")["found"]


def test_paging_elf_maps_kernel_text(tmp_path) -> None:
    t = generate(Scenario(seed=6, ram="32M"), tmp_path / "p.elf", "elf-paging")
    from elftools.elf.elffile import ELFFile

    with t.path.open("rb") as f:
        loads = [s.header for s in ELFFile(f).iter_segments() if s.header.p_type == "PT_LOAD"]
    k = t["kernel"]
    text = [h for h in loads if h.p_vaddr <= k["text_va"] < h.p_vaddr + h.p_memsz]
    assert text and text[0].p_paddr + k["text_va"] - text[0].p_vaddr == k["text_pa"]
    direct = [h for h in loads if h.p_vaddr == k["page_offset"] + h.p_paddr]
    assert direct and sum(h.p_memsz for h in direct) >= 30 << 20


def test_kexec_vmcore(tmp_path) -> None:
    t = generate(Scenario(seed=8, ram="32M"), tmp_path / "v.kexec", "kexec")
    assert t["scenario"]["panic"] and t["vmcoreinfo"]["crashtime"]
    ck = t["kernel"]["crashkernel"]
    with open_dump(t.path) as d:
        assert [n.name for n in d.notes] == ["CORE", "CORE", "VMCOREINFO"]
        assert b"CRASHTIME=" in d.notes[-1].desc
        assert not d.memory.contains(ck[0]) and not d.memory.contains(0xF0000)
        assert d.memory.read(t["vmcoreinfo"]["note_paddr"] + 12, 10) == b"VMCOREINFO"


# -- what real tools say ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interop")
    s = Scenario(seed=21, ram="48M", vmgenid=True)
    return {fmt: generate(s, tmp / f"d.{fmt}", fmt) for fmt in ("elf", "elf-paging", "kdump", "kdump-flat",
                                                                  "kexec")}


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["elf", "elf-paging", "kdump", "kdump-flat", "kexec"])
def test_crash_osrelease(dumps, fmt) -> None:
    crash = need_tool("crash")
    r = subprocess.run([crash, "--osrelease", str(dumps[fmt].path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == dumps[fmt]["kernel"]["osrelease"]


LIBKDUMPFILE = r"""
import json, sys, kdumpfile
k = kdumpfile.kdumpfile(sys.argv[1])
note = int(sys.argv[2])
print(json.dumps({"release": k.attr["linux.vmcoreinfo.lines"]["OSRELEASE"],
                  "phys_base": k.attr["linux.vmcoreinfo.lines"]["NUMBER(phys_base)"],
                  "page": bytes(k.read(kdumpfile.KDUMP_MACHPHYSADDR, note, 24)).hex()}))
"""


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["elf", "kdump", "kexec"])
def test_libkdumpfile_reads_generated_dumps(dumps, fmt) -> None:
    py = need_libkdumpfile()
    t = dumps[fmt]
    note = t["vmcoreinfo"]["note_paddr"]
    r = subprocess.run([py, "-c", LIBKDUMPFILE, str(t.path), str(note)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["release"] == t["kernel"]["osrelease"]
    assert int(got["phys_base"]) == t["kernel"]["phys_base"]
    assert bytes.fromhex(got["page"])[12:22] == b"VMCOREINFO"


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["elf", "elf-paging", "kexec"])
def test_drgn_reads_through_generated_page_tables(dumps, fmt) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (pip install 'vmci[drgn]')")
    t = dumps[fmt]
    k = t["kernel"]
    prog = drgn.Program()
    prog.set_core_dump(str(t.path))
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    release = prog.read(k["uts_release_vaddr"], 65).rstrip(b"\0")
    assert release == k["osrelease"].encode()
    assert prog.read(k["linux_banner"], len(k["linux_banner_text"])).decode() == k["linux_banner_text"]


@pytest.mark.interop
@pytest.mark.parametrize("fmt", ["kdump", "kdump-flat"])
def test_drgn_on_qemu_kdump_with_given_vmcoreinfo(dumps, fmt) -> None:
    drgn = pytest.importorskip("drgn", reason="drgn is not installed (pip install 'vmci[drgn]')")
    t = dumps[fmt]
    k = t["kernel"]
    with open_dump(t.path) as d:
        text = d.facts["vmcoreinfo_text"]
    prog = drgn.Program(drgn.host_platform, vmcoreinfo=text)
    try:
        prog.set_core_dump(str(t.path))
    except Exception as e:  # drgn built without libkdumpfile
        pytest.skip(f"this drgn cannot open kdump files: {e}")
    assert prog.read(k["uts_release_vaddr"], 65).rstrip(b"\0") == k["osrelease"].encode()
    assert prog.read(k["linux_banner"], 14) == b"Linux version "


def test_build_is_reusable_for_several_formats(tmp_path) -> None:
    from vmci.producer.scenario import write_dump

    g = build(Scenario(seed=3, ram="16M"))
    with (tmp_path / "a").open("wb") as f:
        write_dump(g, f, "elf")
    with (tmp_path / "b").open("wb") as f, pytest.raises(UsageError):
        write_dump(g, f, "vmss")
