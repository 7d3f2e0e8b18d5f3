"""The triage record's contract (schema generated from the fields, round trips, pickling) and the
crash fingerprint: equal causes share one, distinct causes do not."""

from __future__ import annotations

import dataclasses
import json
import pickle

import jsonschema
import pytest

from vmci.fleet.record import (
    TRIAGE_SCHEMA,
    TriageRecord,
    fingerprint,
    json_schema,
    normalise_frame,
    normalise_panic,
)

# Two occurrences of the same NULL dereference: other boot (KASLR shifts every text address),
# other PID, CPU and time, the unreliable "? " frames differ, the offsets inside functions differ.
OOPS_A = (
    "[  812.345678] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    [
        "[  812.345990] Call Trace:",
        "[  812.345991]  <TASK>",
        "[  812.345992]  ? __die+0x23/0x70",
        "[  812.345993]  ? page_fault_oops+0x171/0x4e0",
        "[  812.345994]  ? exc_page_fault+0x77/0x170",
        "[  812.345995]  ? asm_exc_page_fault+0x26/0x30",
        "[  812.345996]  ext4_es_lookup_extent+0x3a/0x210 [ext4]",
        "[  812.345997]  ext4_map_blocks+0x8c/0x5f0 [ext4]",
        "[  812.345998]  ext4_readdir+0x1f1/0xb30 [ext4]",
        "[  812.345999]  iterate_dir+0x17f/0x1c0",
        "[  812.346000]  __x64_sys_getdents64+0x80/0x120",
        "[  812.346001]  do_syscall_64+0x5b/0x80",
    ],
)
OOPS_B = (
    "[ 3.210000] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    [
        "Call Trace:",
        " <TASK>",
        " ? show_regs+0x6d/0x80",
        " ? __die+0x24/0x80",
        " ext4_es_lookup_extent+0x41/0x230 [ext4]",
        " ext4_map_blocks+0x91/0x600 [ext4]",
        " ext4_readdir+0x1f9/0xb40 [ext4]",
        " iterate_dir+0x181/0x1c0",
        " __x64_sys_getdents64+0x84/0x130",
    ],
)


def test_equal_causes_share_a_fingerprint() -> None:
    assert fingerprint(*OOPS_A) == fingerprint(*OOPS_B)
    assert fingerprint(*OOPS_A) is not None and len(fingerprint(*OOPS_A) or "") == 16


@pytest.mark.parametrize(("a", "b"), [
    # KASLR-shifted addresses and another PID/CPU/timestamp in the line itself
    ("[  10.000001] general protection fault, probably for non-canonical address 0xdead000000000122: "
     "0000 [#1] PREEMPT SMP PTI",
     "[9999.123456] general protection fault, probably for non-canonical address 0xdead0000000001aa: "
     "0000 [#3] PREEMPT SMP PTI"),
    ("[   55.000000] BUG: unable to handle page fault for address: ffffffffc0a01234",
     "[ 1234.500000] BUG: unable to handle page fault for address: ffffffffc0b35234"),
    ("[    5.100000] kernel BUG at lib/list_debug.c:54!", "[ 77.000000] kernel BUG at lib/list_debug.c:62!"),
    ("[  100.100100] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:2:123]",
     "[  200.100100] watchdog: BUG: soft lockup - CPU#3 stuck for 26s! [kworker/3:0:4567]"),
    ("[   3.000000] [    T1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009",
     "[   9.000000] [    T1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b"),
])
def test_masked_variation_shares_a_fingerprint(a: str, b: str) -> None:
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize(("a", "b"), [
    ("Kernel panic - not syncing: sysrq triggered crash",
     "Kernel panic - not syncing: softlockup: hung tasks"),
    ("BUG: kernel NULL pointer dereference, address: 0000000000000008",
     "BUG: unable to handle page fault for address: 0000000000000008"),
    ("kernel BUG at lib/list_debug.c:54!", "kernel BUG at mm/slub.c:54!"),
    ("Kernel panic - not syncing: Fatal exception",
     "Kernel panic - not syncing: Fatal exception in interrupt"),
])
def test_distinct_causes_differ(a: str, b: str) -> None:
    assert fingerprint(a) != fingerprint(b)


def test_same_line_other_stack_differs() -> None:
    line = "Kernel panic - not syncing: Fatal exception"
    assert fingerprint(line, ["ext4_readdir+0x1/0x2 [ext4]", "iterate_dir+0x1/0x2"]) != \
        fingerprint(line, ["xfs_readdir+0x1/0x2 [xfs]", "iterate_dir+0x1/0x2"])
    # beyond the first frames the stack no longer matters
    base = ["a+0x1/0x2", "b+0x1/0x2", "c+0x1/0x2", "d+0x1/0x2", "e+0x1/0x2"]
    assert fingerprint(line, [*base, "f+0x1/0x2"]) == fingerprint(line, [*base, "g+0x9/0x10"])


def test_normalisation() -> None:
    assert normalise_panic("[  812.345678] BUG: kernel NULL pointer dereference, address: 0000000000000008") \
        == "BUG: kernel NULL pointer dereference, address: ADDR"
    assert normalise_panic("RIP: 0010:ext4_es_lookup_extent+0x3a/0x210 [ext4]") == \
        "RIP: NUM:ext4_es_lookup_extent [ext4]"
    assert normalise_frame("  ? __die+0x23/0x70") is None
    assert normalise_frame("  panic+0x10f/0x2f5") is None  # plumbing, not the cause
    assert normalise_frame("  ext4_map_blocks+0x8c/0x5f0 [ext4]") == "ext4_map_blocks [ext4]"
    assert normalise_frame("RIP: 0010:sysrq_handle_crash+0x16/0x20") == "sysrq_handle_crash"
    assert fingerprint(None) is None and fingerprint(None, ["? x+0x1/0x2"]) is None


def test_schema_is_generated_from_the_fields() -> None:
    schema = json_schema()
    names = [f.name for f in dataclasses.fields(TriageRecord)]
    assert list(schema["properties"]) == names and schema["required"] == names
    assert all(p["description"] for p in schema["properties"].values())
    assert schema["properties"]["schema"]["const"] == TRIAGE_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    rec = TriageRecord(path="x", size=1, mtime=2.5, release="6.1.0", failing_checks=("a",),
                       kerneloffset=1 << 30)
    jsonschema.validate(rec.to_dict(), schema)
    bad = {**rec.to_dict(), "kerneloffset": "0x40000000"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_round_trip_and_pickle() -> None:
    rec = TriageRecord(path="/d/x.kdump", size=10, mtime=1.25, last_lines=("a", "b"), failing_checks=("c",),
                       error_class="FormatError", exit_code=3)
    again = TriageRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec and hash(again) == hash(rec)
    assert pickle.loads(pickle.dumps(rec)) == rec
    assert rec.failed and rec.key == ("/d/x.kdump", 10, 1.25)
    # a newer vmci's extra field is ignored, a missing one takes its default
    assert TriageRecord.from_dict({"path": "p", "from_the_future": 1}) == TriageRecord(path="p")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.path = "y"  # type: ignore[misc]
