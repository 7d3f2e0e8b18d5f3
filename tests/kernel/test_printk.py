"""vmci.kernel.printk: the kernel log from the VMCOREINFO alone.

Oracles: the producer's own record of what the guest kernel logged and what its ring kept or a
fault destroyed (:mod:`vmci.producer.printk`); makedumpfile 1.7.2 and kexec-tools' vmcore-dmesg
run on a kexec-style ELF of the same guest; hand-written expected bytes from makedumpfile's
documented format.  The reader reads through the guest's own page tables and the VMCOREINFO
*text* the guest wrote (tests/printk_guest.py), never through producer internals.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from printk_guest import (
    FlatGuest,
    Guest,
    VmcoreinfoKernel,
    boot,
    flat_guest,
    makedumpfile_dmesg,
    need,
)

from vmci.core.memory import Range, SparseMemory
from vmci.errors import FormatError, NotFoundError, UsageError
from vmci.kernel.printk import (
    PrintkLog,
    PrintkRecord,
    format_dmesg,
    format_json_lines,
    get_printk_records,
    print_dmesg,
    select_records,
    variant_for,
)
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.layouts.printk import CALLER_CPU, LOG_CONT, LOG_NEWLINE
from vmci.producer.linux import PROFILES
from vmci.producer.printk import LogRecord, boot_log, consistent_values, panic_log

LOCKLESS = ["5.10", "5.15", "6.1", "6.9", "6.12", "6.18"]
STRUCTURED = ["3.10", "4.9", "4.19"]
PLAIN = ["3.2"]
VARIANT = {**dict.fromkeys(LOCKLESS, "lockless"), **dict.fromkeys(STRUCTURED, "structured"),
           **dict.fromkeys(PLAIN, "plain")}


def read(g: Guest | FlatGuest, **kw: object) -> PrintkLog:
    return get_printk_records(g.kernel(), **kw)  # type: ignore[arg-type]


# -- every layout round-trips -------------------------------------------------------------------------


@pytest.mark.parametrize("prof", LOCKLESS + STRUCTURED + PLAIN)
def test_wrapped_log_round_trips(prof: str) -> None:
    g = boot(prof, boot_log(400, seed=7), faults=["wrap"])
    log = read(g)
    assert log.variant == VARIANT[prof] == variant_for(g.kernel()).name
    assert g.truth.overwritten > 0 and len(g.truth.records) > 20  # the ring really wrapped
    assert list(log.records) == g.truth.records
    assert log.warnings == () and log.complete
    assert log.reusable == g.truth.reusable


@pytest.mark.parametrize("prof", ["5.10", "6.1"])
def test_unwrapped_log_keeps_everything(prof: str) -> None:
    recs = boot_log(60, seed=2)
    g = boot(prof, recs)
    log = read(g)
    assert [r.text for r in log.records] == [r.text for r in recs]
    assert [r.seq for r in log.records] == list(range(60))
    assert log.reusable == 1  # the initial head/tail descriptor (DESC0_ID) is reusable


def test_record_fields_lockless() -> None:
    recs = [LogRecord(b"one", 1_500_000_123, level=3, facility=4, caller_id=4242, subsystem="pci",
                      device="+pci:0000:00:01.0", flags=LOG_NEWLINE),
            LogRecord(b"two", 2_000_000_000, level=7, facility=0, caller_id=CALLER_CPU | 3, flags=LOG_CONT),
            LogRecord(b"", 3_000_000_000)]
    g = boot("6.1", recs)
    one, two, empty = read(g).records
    assert (one.seq, one.ts_nsec, one.level, one.facility, one.flags) == (0, 1_500_000_123, 3, 4, LOG_NEWLINE)
    assert (one.caller, one.caller_tid, one.caller_cpu) == ("T4242", 4242, None)
    assert (one.subsystem, one.device) == ("pci", "+pci:0000:00:01.0")
    assert (two.caller, two.caller_cpu, two.continuation) == ("C3", 3, True)
    assert (empty.text, empty.dataless, empty.seq) == (b"", True, 2)


def test_record_fields_structured_dictionary() -> None:
    recs = [LogRecord(b"virtio0: up", 10, level=5, facility=3, subsystem="virtio", device="+virtio:virtio0")]
    rec, = read(boot("4.19", recs)).records
    assert (rec.seq, rec.level, rec.facility, rec.caller) == (None, 5, 3, None)
    assert (rec.subsystem, rec.device) == ("virtio", "+virtio:virtio0")


def test_structured_caller_id_when_exported() -> None:
    """CONFIG_PRINTK_CALLER adds OFFSET(printk_log.caller_id) (5.1+)."""
    values = {"SIZE(printk_log)": 20, "OFFSET(printk_log.caller_id)": 16}
    recs = [LogRecord(b"a", 1, caller_id=77), LogRecord(b"b", 2, caller_id=CALLER_CPU | 1)]
    g = boot("4.19", recs, values=values)
    assert "OFFSET(printk_log.caller_id)=16" in g.info.text
    assert [r.caller for r in read(g).records] == ["T77", "C1"]


@pytest.mark.parametrize("variant,pointer_size,byteorder,version", [
    ("lockless", 4, "little", (5, 10)), ("lockless", 4, "little", (5, 15)), ("lockless", 4, "big", (6, 1)),
    ("lockless", 8, "big", (5, 15)), ("structured", 4, "little", (4, 19)), ("structured", 8, "big", (4, 19)),
    ("plain", 4, "little", (3, 2))])
def test_other_word_sizes_and_byte_orders(variant: str, pointer_size: int, byteorder: str,
                                          version: tuple[int, int]) -> None:
    """The 32-bit state encoding (state in bits 31..30) and big-endian bitfields."""
    g = flat_guest(variant, boot_log(300, seed=4), pointer_size=pointer_size, byteorder=byteorder,
                   version=version, faults=["wrap"], clear_after=250)
    log = read(g)
    assert list(log.records) == g.truth.records and not log.warnings
    assert list(read(g, since_clear=True).records) == g.truth.since_clear


# -- faults: skipped, counted, never raised -----------------------------------------------------------


@pytest.mark.parametrize("prof,fault,code,bits", [
    ("6.1", "half-written", "reserved", 14), ("5.10", "half-written", "reserved", 14),
    ("6.1", "reused-descriptor", "id-mismatch", 14), ("6.12", "corrupt-id", "data-id-mismatch", 14),
    ("6.1", "truncated", "unreadable", 14), ("4.19", "corrupt-len", "cycle", 13),
    ("3.10", "corrupt-len", "cycle", 13), ("4.19", "truncated", "unreadable", 14)])
def test_fault_is_skipped_and_counted(prof: str, fault: str, code: str, bits: int) -> None:
    g = boot(prof, boot_log(500, seed=11), faults=[fault], ring_bits=bits)
    assert g.truth.damaged[fault] >= 1
    log = read(g)
    assert list(log.records) == g.truth.records
    assert [w.code for w in log.warnings] == [code] and not log.complete
    if VARIANT[prof] == "lockless":  # one warning per record lost; a structured walk stops once
        assert log.warnings[0].count == g.truth.damaged[fault]


def test_all_lockless_faults_together() -> None:
    faults = ["half-written", "reused-descriptor", "corrupt-id", "truncated"]
    g = boot("6.1", boot_log(500, seed=12), faults=faults, ring_bits=14)
    log = read(g)
    assert list(log.records) == g.truth.records
    assert {w.code for w in log.warnings} == {"reserved", "id-mismatch", "data-id-mismatch", "unreadable"}
    assert sum(w.count for w in log.warnings) == sum(g.truth.damaged.values())


@pytest.mark.parametrize("consistent", [False, True])
def test_stuck_writer_loses_text_then_records(consistent: bool) -> None:
    """A reserved record blocks the data tail (later records get FAILED_LPOS: 'data-lost') and
    then the descriptor tail (later messages are refused: the ring's fail counter)."""
    values = consistent_values(PROFILES["6.1"]) if consistent else {}
    g = boot("6.1", boot_log(500, seed=11), faults=["stuck-writer"], ring_bits=12, values=values)
    log = read(g)
    assert list(log.records) == g.truth.records
    assert {w.code: w.count for w in log.warnings}["reserved"] == 1
    assert sum(w.count for w in log.warnings) == g.truth.damaged["stuck-writer"]
    assert {w.code for w in log.warnings} == {"reserved", "data-lost"} and g.truth.failed > 0
    # the profiles' default offsets put "fail" inside the text ring: then it is not read
    assert log.failed == (g.truth.failed if consistent else None)


def test_plain_truncated_keeps_what_the_dump_holds() -> None:
    g = boot("3.2", boot_log(500, seed=13), faults=["truncated"], ring_bits=14)
    log = read(g)
    assert b"".join(r.raw or b"" for r in log.records) == g.truth.plain_text
    assert [w.code for w in log.warnings] == ["unreadable"]
    assert set(g.truth.records) <= set(log.records) and g.truth.damaged["truncated"] > 0


def test_no_log_keys_is_not_found() -> None:
    mem = SparseMemory([Range(0, 1 << 20)])
    k = VmcoreinfoKernel(mem, VmcoreInfo.parse(b"OSRELEASE=6.1.0\nPAGESIZE=4096\n"), lambda va: va)
    with pytest.raises(NotFoundError, match="kernel log keys"):
        get_printk_records(k)


def test_impossible_offsets_are_a_format_error() -> None:
    g = boot("6.1", boot_log(10))
    text = g.placed.text.replace(b"OFFSET(prb_desc.text_blk_lpos)=8", b"OFFSET(prb_desc.text_blk_lpos)=80")
    k = VmcoreinfoKernel(g.mem, VmcoreInfo.parse(text), g.kernel().translate)
    with pytest.raises(FormatError, match=r"prb_desc\.text_blk_lpos"):
        get_printk_records(k)


def test_unreadable_prb_pointer_is_a_warning() -> None:
    g = boot("6.1", boot_log(10))
    g.extra_holes.append(Range(g.layout.kernel_paddr(g.layout.runtime("prb")) & ~0xFFF, 0x1000))
    log = read(g)
    # printk_rb_static is the fallback when prb cannot be read; here it shares the lost page
    assert not log.records and {w.code for w in log.warnings} == {"unreadable"}


def test_bad_arguments() -> None:
    g = boot("6.1", boot_log(10))
    with pytest.raises(UsageError):
        get_printk_records(g.kernel(), ring="dynamic")
    with pytest.raises(UsageError):
        get_printk_records(g.kernel(), max_descriptors=0)
    with pytest.raises(UsageError):
        format_dmesg([], style="dmesg")
    with pytest.raises(UsageError):
        select_records([], tail=-1)


def test_max_descriptors_reads_the_newest() -> None:
    g = boot("6.1", boot_log(100, seed=3))
    log = get_printk_records(g.kernel(), max_descriptors=10)
    assert list(log.records) == g.truth.records[-10:]
    assert [w.code for w in log.warnings] == ["ring-clamped"]


# -- clear_seq, the boot ring --------------------------------------------------------------------------


@pytest.mark.parametrize("prof,bits", [("5.10", 14), ("6.1", 14), ("6.1", 12), ("4.19", 14), ("4.19", 12),
                                       ("3.2", 14), ("3.2", 12)])
@pytest.mark.parametrize("clear", [0, 300, 590, 600])
def test_since_clear(prof: str, bits: int, clear: int) -> None:
    """clear_seq as a u64 (5.10) and a latched_seq (6.1); clear_idx; logged_chars."""
    g = boot(prof, boot_log(600, seed=3), ring_bits=bits, clear_after=clear)
    log = read(g, since_clear=True)
    assert list(log.records) == g.truth.since_clear and log.since_clear
    if VARIANT[prof] == "lockless":
        assert log.clear_seq == g.truth.clear_seq == clear


def test_latched_clear_seq_mid_update_uses_the_stable_copy() -> None:
    """latched_seq_write(): an odd seqcount means val[0] is being written; readers take val[1]."""
    g = boot("6.1", boot_log(100, seed=3), clear_after=40)
    addr = g.layout.kernel_paddr(g.layout.runtime("clear_seq"))
    val = g.layout.value("OFFSET(latched_seq.val)")
    g.mem.write(addr, (3).to_bytes(4, "little"))
    g.mem.write(addr + val, (90).to_bytes(8, "little"))  # the new value, half written
    log = read(g, since_clear=True)
    assert log.clear_seq == 40 and [r.seq for r in log.records] == list(range(40, 100))


def test_since_clear_without_the_key_reads_everything() -> None:
    g = boot("5.10", boot_log(30), clear_after=10)
    text = g.placed.text.replace(b"SYMBOL(clear_seq)", b"SYMBOL(other_seq)")
    k = VmcoreinfoKernel(g.mem, VmcoreInfo.parse(text), g.kernel().translate)
    log = get_printk_records(k, since_clear=True)
    assert len(log.records) == 30 and not log.since_clear and log.warnings[0].code == "no-clear-seq"


def test_dynamic_ring_and_the_boot_ring() -> None:
    """prb moved to printk_rb_dynamic; printk_rb_static still holds early-boot records."""
    g = boot("6.1", boot_log(500, seed=9), ring_bits=10, dynamic_bits=14, dynamic_after=150)
    active, static, both = (read(g, ring=r) for r in ("active", "static", "both"))
    assert not active.static_ring and active.ring == g.truth.addresses["ring"]
    assert list(active.records) == g.truth.records
    assert static.static_ring and list(static.records) == g.truth.static_records
    first = g.truth.records[0].seq
    assert list(both.records) == [r for r in g.truth.static_records if r.seq < first] + g.truth.records


@pytest.mark.parametrize("prof,fits", [("6.12", False), ("6.18", True)])
def test_perfectly_fitting_blocks_of_the_2025_rule(prof: str, fits: bool) -> None:
    """'printk_ringbuffer: don't needlessly wrap data blocks around': a block may end exactly at
    the end of the data array, its next lpos overflowing to 0 on the first wrap; before, such
    a block was wrapped to index 0."""
    recs = [LogRecord(b"%055dx" % i, 1000 * i) for i in range(200)]
    g = boot(prof, recs, ring_bits=12)
    assert any(off + size == 4096 for _, off, size in g.truth.spans) == fits
    log = read(g)
    assert list(log.records) == g.truth.records and not log.warnings


# -- bad input: a property ------------------------------------------------------------------------------

_FIXTURE: dict[str, Guest] = {}


def _small(kind: str) -> Guest:
    if kind not in _FIXTURE:
        if kind == "lockless":
            _FIXTURE[kind] = boot("6.1", boot_log(300, seed=21), ring_bits=12, clear_after=280)
        else:
            _FIXTURE[kind] = boot("4.19", boot_log(300, seed=21), ring_bits=12, clear_after=280)
    return _FIXTURE[kind]


_corruption = st.lists(st.tuples(st.sampled_from(["ring", "prb", "descs", "infos", "data", "data", "descs"]),
                                 st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
                       min_size=1, max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["lockless", "structured"]), damage=_corruption, since_clear=st.booleans())
def test_random_corruption_gives_partial_output(kind: str, damage: list[tuple[str, int, bytes]],
                                                since_clear: bool) -> None:
    """Corrupt descriptors, infos, text, the ring struct or the prb pointer: never an exception,
    bounded time, and every record none of whose bytes were touched is still read."""
    g = _small(kind)
    a = g.truth.addresses
    L = g.layout
    lockless = kind == "lockless"
    pa = {"prb": L.kernel_paddr(L.runtime("prb" if lockless else "log_first_idx")),
          "ring": L.kernel_paddr(a["ring"] if lockless else L.runtime("log_next_idx"))}
    direct = g.tables.page_offset
    if kind == "lockless":
        pa.update(descs=a["descs"] - direct, infos=a["infos"] - direct, data=a["data"] - direct)
        sizes = {"prb": 8, "ring": L.value("SIZE(printk_ringbuffer)"), "descs": 128 * 24, "infos": 128 * 88,
                 "data": 1 << 12}
    else:
        pa.update(descs=a["log_buf"] - direct, infos=a["log_buf"] - direct, data=a["log_buf"] - direct)
        sizes = {"prb": 4, "ring": 4, "descs": 1 << 12, "infos": 1 << 12, "data": 1 << 12}
    saved = []
    touched: dict[str, set[int]] = {}
    try:
        for region, off, raw in damage:
            off %= sizes[region]
            raw = raw[: sizes[region] - off]
            start = pa[region] + off
            saved.append((start, g.mem.read(start, len(raw))))
            g.mem.write(start, raw)
            touched.setdefault(region, set()).update(range(off, off + len(raw)))
        t0 = time.perf_counter()
        log = get_printk_records(g.kernel(), since_clear=since_clear)
        assert time.perf_counter() - t0 < 10
        assert len(log.records) <= 1 << 12
        format_dmesg(log, caller=True)
        format_json_lines(log)
        if since_clear or "ring" in touched or "prb" in touched:
            return
        if kind == "lockless":
            intact = [r for r, (slot, off, size) in zip(g.truth.records, g.truth.spans, strict=True)
                      if not touched.get("descs", set()) & set(range(slot * 24, slot * 24 + 24))
                      and not touched.get("infos", set()) & set(range(slot * 88, slot * 88 + 88))
                      and not touched.get("data", set()) & set(range(off, off + size))]
        else:  # the walk is sequential: everything before the first damaged record survives
            bad = set().union(*touched.values())
            intact = []
            for r, (_, off, size) in zip(g.truth.records, g.truth.spans, strict=True):
                if bad & set(range(off, off + size)):
                    break
                intact.append(r)
        got = set(log.records)
        assert all(r in got for r in intact)
    finally:
        for start, old in reversed(saved):
            g.mem.write(start, old)


def test_corrupt_ring_geometry_is_refused_quickly() -> None:
    g = boot("6.1", boot_log(50), ring_bits=12)
    ring = g.layout.kernel_paddr(g.truth.addresses["ring"])
    for count_bits, size_bits in ((60, 12), (7, 0), (7, 40), (25, 30)):
        g.mem.write(ring, count_bits.to_bytes(4, "little"))
        text_ring = ring + g.layout.value("OFFSET(printk_ringbuffer.text_data_ring)")
        g.mem.write(text_ring, size_bits.to_bytes(4, "little"))
        t0 = time.perf_counter()
        log = read(g)
        assert time.perf_counter() - t0 < 5
        assert {w.code for w in log.warnings} & {"bad-ring", "tail-head-span", "unreadable", "bad-lpos",
                                                   "id-mismatch", "data-id-mismatch"}


# -- formatting ------------------------------------------------------------------------------------------


def _rec(text: bytes, ts: int = 1_234_567_891, **kw: object) -> PrintkRecord:
    return PrintkRecord(0, ts, text, **kw)  # type: ignore[arg-type]


def test_makedumpfile_format_rules() -> None:
    """dump_record()/dump_log_entry(): "[%5llu.%06lu] ", newline indentation, signed \\x escapes."""
    assert format_dmesg([_rec(b"hello")]) == b"[    1.234567] hello\n"
    assert format_dmesg([_rec(b"a\nb", ts=123_456_000_000_999)]) == b"[123456.000000] a\n                b\n"
    assert format_dmesg([_rec(b"t\tab\x01\x7f\xe9\r")]) == b"[    1.234567] t\tab\\x01\\x7f\\xffffffe9\r\n"
    assert format_dmesg([_rec(b"", dataless=True), _rec(b"")]) == b"[    1.234567] \n"


def test_caller_field_of_makedumpfile_1_7_5() -> None:
    """``[%*s] `` with PID_CHARS_DEFAULT 8 after the timestamp, and the indentation follows it."""
    recs = [_rec(b"x\ny", caller_tid=123), _rec(b"z", caller_cpu=1), _rec(b"w")]
    assert format_dmesg(recs, caller=True) == (
        b"[    1.234567] [    T123] x\n" + b" " * 26 + b"y\n"
        b"[    1.234567] [      C1] z\n"
        b"[    1.234567] w\n")


def test_vmcore_dmesg_style() -> None:
    recs = [_rec(b"a\nb\xe9"), _rec(b"", dataless=True)]
    assert format_dmesg(recs, style="vmcore-dmesg") == b"[    1.234567] a\nb\\xe9\n[    1.234567] \n"


def test_selection_and_json_lines() -> None:
    recs = [_rec(b"a", level=3, facility=0), _rec(b"b", level=6, facility=3), _rec(b"c\xff", level=None)]
    assert [r.text for r in select_records(recs, levels=[3, 6])] == [b"a", b"b"]
    assert [r.text for r in select_records(recs, facilities=[3])] == [b"b"]
    assert [r.text for r in select_records(recs, tail=2)] == [b"b", b"c\xff"]
    assert select_records(recs, tail=0) == []
    assert format_dmesg(recs, levels=[6]) == b"[    1.234567] b\n"
    lines = [json.loads(x) for x in format_json_lines(recs).splitlines()]
    assert lines[0]["level"] == 3 and lines[1]["facility"] == 3
    assert lines[2]["text"] == "c\\xff" and lines[2]["text_hex"] == "63ff" and "text_hex" not in lines[0]


def test_json_lines_round_trip_producer_records() -> None:
    g = boot("6.1", boot_log(200, seed=5), faults=["wrap"])
    got = [json.loads(x) for x in format_json_lines(read(g)).splitlines()]
    assert got == [r.to_dict() for r in g.truth.records]


def test_print_dmesg(tmp_path: Path) -> None:
    g = boot("5.10", boot_log(20))
    out = tmp_path / "log"
    with out.open("wb") as f:
        print_dmesg(read(g), f, caller=True, tail=5)
    assert out.read_bytes() == format_dmesg(read(g), caller=True, tail=5)
    assert out.read_bytes().count(b"\n") == 5


def test_panic_lines_are_the_last_records() -> None:
    recs = boot_log(100, seed=1)
    recs += panic_log(start_ns=recs[-1].ts_nsec + 1000, kaslr_offset=0x2A000000)
    text = format_dmesg(read(boot("6.1", recs)))
    assert text.splitlines()[-1].endswith(b"---[ end Kernel panic - not syncing: sysrq triggered crash ]---")
    assert b"Kernel Offset: 0x2a000000 from 0xffffffff81000000" in text


# -- the peers: makedumpfile --dump-dmesg and vmcore-dmesg --------------------------------------------------


PEER_CASES = [
    ("6.1", {"faults": ["wrap"]}), ("5.10", {"ring_bits": 12}), ("6.12", {}), ("6.9", {"faults": ["wrap"]}),
    ("6.1", {"ring_bits": 10, "dynamic_bits": 14, "dynamic_after": 100}),
    ("6.1", {"ring_bits": 13, "faults": ["half-written", "reused-descriptor"]}),
    ("6.1", {"ring_bits": 13, "faults": ["stuck-writer"], "values": consistent_values(PROFILES["6.1"])}),
    ("4.19", {"faults": ["wrap"]}), ("4.9", {}), ("3.10", {"faults": ["wrap"]}),
    ("3.2", {"faults": ["wrap"]}), ("3.2", {}),
]


def _stuck(case: tuple[str, dict[str, object]]) -> bool:
    """Records whose text a stuck writer made the kernel drop: vmcore-dmesg prints a bare line
    for each, and they stop makedumpfile's --partial-dmesg arithmetic from holding."""
    return "stuck-writer" in case[1].get("faults", [])  # type: ignore[operator]


@pytest.mark.interop
@pytest.mark.parametrize("prof,opts", PEER_CASES)
def test_byte_identical_to_makedumpfile(prof: str, opts: dict[str, object], tmp_path: Path) -> None:
    g = boot(prof, boot_log(400, seed=17), **opts)  # type: ignore[arg-type]
    elf = g.write_kexec_elf(tmp_path / "vmcore")
    r = makedumpfile_dmesg(elf, tmp_path / "dmesg")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dmesg").read_bytes() == format_dmesg(read(g))


@pytest.mark.interop
@pytest.mark.parametrize("prof,opts", [c for c in PEER_CASES if VARIANT[c[0]] != "plain" and not _stuck(c)])
def test_partial_dmesg_matches_makedumpfile(prof: str, opts: dict[str, object], tmp_path: Path) -> None:
    """--partial-dmesg: makedumpfile starts at clear_seq's slot (lockless) or clear_idx
    (structured); it has no partial mode for the plain buffer (it ignores logged_chars)."""
    g = boot(prof, boot_log(400, seed=17), clear_after=395, **opts)  # type: ignore[arg-type]
    elf = g.write_kexec_elf(tmp_path / "vmcore")
    r = subprocess.run([need("makedumpfile"), "--dump-dmesg", "--partial-dmesg", str(elf),
                                      str(tmp_path / "dmesg")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "dmesg").read_bytes() == format_dmesg(read(g, since_clear=True))


@pytest.mark.interop
def test_makedumpfile_partial_dmesg_drops_records_before_the_heads_pass(tmp_path: Path) -> None:
    """Pinned divergence: makedumpfile starts --partial-dmesg at head - head % count + clear_seq %
    count, so a clear_seq from an earlier pass over the 128 descriptors loses records (and one
    whose slot is past the head's makes it walk 2^62 ids: not run here)."""
    g = boot("6.1", boot_log(400, seed=17), ring_bits=12, clear_after=260)
    elf = g.write_kexec_elf(tmp_path / "vmcore")
    cmd = [need("makedumpfile"), "--dump-dmesg", "--partial-dmesg", str(elf), str(tmp_path / "d")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ours = read(g, since_clear=True)
    assert list(ours.records) == g.truth.since_clear == g.truth.records  # clear_seq predates the ring
    theirs = (tmp_path / "d").read_bytes()
    head = g.truth.records[-1].seq
    assert head is not None
    start = head - head % 128 + 260 % 128  # seq 388: records 346..387 are lost
    assert theirs == format_dmesg([r for r in ours.records if r.seq is not None and r.seq >= start])
    assert theirs != format_dmesg(ours)


@pytest.mark.interop
def test_makedumpfile_misreads_a_perfectly_fitting_block(tmp_path: Path) -> None:
    """Pinned divergence: with the 2025 'don't needlessly wrap' rule a block can end exactly at
    the end of the data array; makedumpfile 1.7.2 takes begin > next as wrapped and prints the
    text of the block at index 0 instead.  vmci prints the record the kernel wrote."""
    recs = [LogRecord(b"%055dx" % i, 1000 * i) for i in range(200)]
    g = boot("6.18", recs, ring_bits=12)
    elf = g.write_kexec_elf(tmp_path / "vmcore")
    assert makedumpfile_dmesg(elf, tmp_path / "dmesg").returncode == 0
    theirs = (tmp_path / "dmesg").read_bytes().splitlines()
    ours = format_dmesg(read(g)).splitlines()
    diff = [(a, b) for a, b in zip(theirs, ours, strict=True) if a != b]
    assert len(diff) == 1
    spans = zip(g.truth.records, g.truth.spans, strict=True)
    fit = next(r for r, (_, off, size) in spans if off + size == 4096)
    assert diff[0][1].endswith(fit.text) and not diff[0][0].endswith(fit.text)


@pytest.mark.interop
@pytest.mark.parametrize("prof,opts", [c for c in PEER_CASES if not _stuck(c)])
def test_vmcore_dmesg_agrees(prof: str, opts: dict[str, object], tmp_path: Path) -> None:
    g = boot(prof, boot_log(400, seed=17), **opts)  # type: ignore[arg-type]
    elf = g.write_kexec_elf(tmp_path / "vmcore")
    r = subprocess.run([need("vmcore-dmesg"), str(elf)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    theirs = r.stdout
    if VARIANT[prof] == "structured":  # vmcore-dmesg prints the len == 0 wrap marker as a record
        theirs = theirs.replace(b"\n[    0.000000] \n", b"\n", 1)
    assert theirs == format_dmesg(read(g), style="vmcore-dmesg")


@pytest.mark.interop
@pytest.mark.parametrize("variant,pointer_size,byteorder,machine", [
    ("lockless", 4, "little", 3), ("lockless", 4, "big", 20), ("lockless", 8, "big", 22),
    ("structured", 4, "little", 3), ("structured", 8, "big", 22), ("plain", 4, "little", 3)])
def test_vmcore_dmesg_agrees_on_32_bit_and_big_endian(variant: str, pointer_size: int, byteorder: str,
                                                      machine: int, tmp_path: Path) -> None:
    """vmcore-dmesg picks its DESC32_* state encoding from the ELF class (EM_386 -> 32 bits)."""
    version = {"lockless": (5, 15), "structured": (4, 19), "plain": (3, 2)}[variant]
    g = flat_guest(variant, boot_log(300, seed=4), pointer_size=pointer_size, byteorder=byteorder,
                   version=version, faults=["wrap"])
    elf = g.write_elf(tmp_path / "vmcore", machine)
    r = subprocess.run([need("vmcore-dmesg"), str(elf)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    theirs = r.stdout
    if variant == "structured":
        theirs = theirs.replace(b"\n[    0.000000] \n", b"\n", 1)
    assert theirs == format_dmesg(read(g), style="vmcore-dmesg")
