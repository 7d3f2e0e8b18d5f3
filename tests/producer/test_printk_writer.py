"""vmci.producer.printk: the guest kernel's log writer.

Its output is checked by readers that are not vmci's: kexec-tools' vmcore-dmesg and
makedumpfile on a kexec-style ELF of the guest, compared with the producer's own truth rendered
in those tools' documented line format; its VMCOREINFO lines are checked against the profile
text of vmci.producer.linux.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from printk_guest import Guest, boot, flat_guest, makedumpfile_dmesg, need, old_profile

from vmci.core.memory import Range, SparseMemory
from vmci.errors import UsageError
from vmci.kernel.printk import PrintkRecord
from vmci.producer import printk as pw
from vmci.producer.linux import PROFILES, KernelLayout, vmcoreinfo_text

ALL_PROFILES = [*PROFILES.values(), *(old_profile(n) for n in ("3.2", "3.10", "5.15", "6.18"))]


def ascii_log(n: int, seed: int) -> list[pw.LogRecord]:
    """Boot messages whose text renders the same in every tool (one line, printable ASCII)."""
    recs = [r for r in pw.boot_log(n, seed=seed) if r.text and b"\n" not in r.text
            and all(0x20 <= b < 0x7F for b in r.text)]
    return recs


def line(r: PrintkRecord) -> bytes:
    """The "[%5lu.%06lu] text" line both makedumpfile and vmcore-dmesg print for a plain record."""
    ts = r.ts_nsec or 0
    return b"[%5d.%06d] %s\n" % (ts // 1_000_000_000, ts % 1_000_000_000 // 1000, r.text)


@pytest.mark.parametrize("prof", ALL_PROFILES, ids=lambda p: p.name)
def test_vmcoreinfo_lines_are_the_profiles_printk_block(prof: pw.KernelProfile) -> None:
    layout = KernelLayout(profile=prof)
    lines = "".join(pw.vmcoreinfo_lines(pw.target_for(layout))).encode()
    assert lines and lines in vmcoreinfo_text(layout)


def test_era_keys() -> None:
    plain = vmcoreinfo_text(KernelLayout(profile=old_profile("3.2")))
    assert b"SYMBOL(log_end)=" in plain and b"SYMBOL(logged_chars)=" in plain and b"printk_log" not in plain
    old = vmcoreinfo_text(KernelLayout(profile=old_profile("3.10")))
    assert b"SIZE(log)=16\n" in old and b"OFFSET(log.len)=8\n" in old and b"printk_log" not in old
    for prof in PROFILES.values():  # the existing profiles print what they printed before
        text = vmcoreinfo_text(KernelLayout(profile=prof))
        assert b"log_end" not in text and b"SIZE(log)" not in text
        assert (b"OFFSET(printk_info.caller_id)" in text) == prof.since(5, 10)
        assert (b"printk_log.caller_id" in text) is False
    values = {"OFFSET(printk_log.caller_id)": 16, "SIZE(printk_log)": 20}
    caller = vmcoreinfo_text(KernelLayout(profile=PROFILES["4.19"], values=values))
    assert b"SIZE(printk_log)=20\n" in caller and b"OFFSET(printk_log.caller_id)=16\n" in caller
    assert b"caller_id" not in vmcoreinfo_text(KernelLayout(profile=PROFILES["4.19"]))


def test_consistent_values() -> None:
    for name, desc_ring in (("5.10", 40), ("6.1", 48)):
        v = pw.consistent_values(PROFILES[name])
        assert v["SIZE(prb_desc_ring)"] == v["OFFSET(printk_ringbuffer.text_data_ring)"] == desc_ring
        assert v["OFFSET(printk_ringbuffer.fail)"] + 8 == v["SIZE(printk_ringbuffer)"]


def test_accounting_and_determinism() -> None:
    recs = pw.boot_log(500, seed=5)
    for prof in ("6.1", "4.19"):
        a = boot(prof, recs, faults=["wrap"])
        t = a.truth
        assert t.written == 500 and t.overwritten > 0
        assert len(t.records) + t.overwritten + sum(t.damaged.values()) == t.written
        b = boot(prof, recs, faults=["wrap"])
        log_buf = {k: v for k, v in t.addresses.items() if k in ("descs", "infos", "data", "log_buf")}
        for va in log_buf.values():
            pa = va - a.tables.page_offset
            assert a.mem.read(pa, 4096) == b.mem.read(pa, 4096)
    t = boot("6.1", recs, faults=["half-written", "reused-descriptor", "corrupt-id"], ring_bits=14).truth
    assert t.damaged == {"half-written": 1, "reused-descriptor": 1, "corrupt-id": 1}
    assert len(t.records) + t.overwritten + 3 == t.written


def test_lockless_seq_follows_the_descriptor_index() -> None:
    """prb_reserve(): the first record gets seq 0; seq % count == id % count ever after."""
    t = boot("6.1", pw.boot_log(900, seed=1), ring_bits=12).truth
    count = (1 << 12) >> 5
    assert [r.seq for r in t.records] == list(range(900 - len(t.records), 900))
    assert all(r.seq is not None and r.seq % count == slot for r, (slot, _, _) in zip(t.records, t.spans,
                                                                                        strict=True))


def test_bad_arguments() -> None:
    mem = SparseMemory([Range(0, 1 << 20)])
    layout = KernelLayout(profile=PROFILES["4.19"])

    def alloc(size: int, align: int = 4096, *, what: str = "") -> int:
        return 0

    with pytest.raises(UsageError, match="does not apply"):
        pw.write_printk_log(mem, layout, [], alloc=alloc, faults=["corrupt-id"])
    with pytest.raises(UsageError, match="does not apply"):
        pw.write_printk_log(mem, layout, [], alloc=alloc, faults=["nonsense"])
    with pytest.raises(UsageError, match="out of range"):
        pw.write_printk_log(mem, layout, [], alloc=alloc, ring_bits=40)
    assert set(pw.FAULTS) == {"half-written", "stuck-writer", "reused-descriptor", "corrupt-id",
                              "corrupt-len", "truncated"}


def test_boot_and_panic_logs() -> None:
    a, b = pw.boot_log(300, seed=4), pw.boot_log(300, seed=4)
    assert a == b and a != pw.boot_log(300, seed=5)
    ts = [r.ts_nsec for r in a]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert any(r.text == b"" for r in a) and any(b"\n" in r.text for r in a)
    assert any(r.caller_id & pw.CALLER_CPU for r in a) and any(r.subsystem for r in a)
    panic = pw.panic_log(start_ns=ts[-1], kaslr_offset=0x1000000, pid=77)
    assert panic[1].text == b"Kernel panic - not syncing: sysrq triggered crash" and panic[1].level == 0
    assert all(r.caller_id == 77 for r in panic) and panic[0].ts_nsec > ts[-1]


# -- independent readers: vmcore-dmesg and makedumpfile --------------------------------------------


def _vmcore_dmesg(g: Guest, tmp_path: Path) -> bytes:
    elf = g.write_kexec_elf(tmp_path / "vmcore")
    r = subprocess.run([need("vmcore-dmesg"), str(elf)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


CASES = [("5.10", {"faults": ["wrap"]}), ("6.12", {"faults": ["wrap"]}),
         ("6.1", {"ring_bits": 10, "dynamic_bits": 14, "dynamic_after": 120}),
         ("6.1", {"ring_bits": 13, "faults": ["half-written", "reused-descriptor"]}),
         ("4.19", {"faults": ["wrap"]}), ("3.10", {"faults": ["wrap"]})]


@pytest.mark.interop
@pytest.mark.parametrize("prof,opts", CASES)
def test_vmcore_dmesg_reads_what_was_written(prof: str, opts: dict[str, object], tmp_path: Path) -> None:
    g = boot(prof, ascii_log(500, seed=8), **opts)  # type: ignore[arg-type]
    assert g.truth.overwritten > 0
    expected = b"".join(line(r) for r in g.truth.records)
    got = _vmcore_dmesg(g, tmp_path)
    if g.truth.variant == "structured":  # vmcore-dmesg prints the wrap marker as a record
        got = got.replace(b"\n[    0.000000] \n", b"\n", 1)
    assert got == expected


@pytest.mark.interop
@pytest.mark.parametrize("prof,opts", [*CASES, ("6.1", {"values": pw.consistent_values(PROFILES["6.1"]),
                                                       "faults": ["wrap"]})])
def test_makedumpfile_reads_what_was_written(prof: str, opts: dict[str, object], tmp_path: Path) -> None:
    g = boot(prof, ascii_log(500, seed=8), **opts)  # type: ignore[arg-type]
    r = makedumpfile_dmesg(g.write_kexec_elf(tmp_path / "vmcore"), tmp_path / "dmesg")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dmesg").read_bytes() == b"".join(line(r) for r in g.truth.records)


@pytest.mark.interop
def test_plain_buffer_read_by_the_peers(tmp_path: Path) -> None:
    g = boot("3.2", ascii_log(500, seed=8), faults=["wrap"])
    assert g.truth.overwritten > 0 and g.truth.plain_text is not None
    assert _vmcore_dmesg(g, tmp_path) == g.truth.plain_text
    r = makedumpfile_dmesg(tmp_path / "vmcore", tmp_path / "dmesg")
    assert r.returncode == 0 and (tmp_path / "dmesg").read_bytes() == g.truth.plain_text


@pytest.mark.interop
@pytest.mark.parametrize("pointer_size,byteorder,machine", [(4, "little", 3), (4, "big", 20), (8, "big", 22)])
def test_vmcore_dmesg_reads_32_bit_and_big_endian_rings(pointer_size: int, byteorder: str, machine: int,
                                                         tmp_path: Path) -> None:
    g = flat_guest("lockless", ascii_log(400, seed=6), pointer_size=pointer_size, byteorder=byteorder,
                   faults=["wrap"])
    elf = g.write_elf(tmp_path / "vmcore", machine)
    r = subprocess.run([need("vmcore-dmesg"), str(elf)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(line(x) for x in g.truth.records)
