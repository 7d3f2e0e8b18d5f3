"""The strategy registry: one order, one applicability rule per strategy, used by every caller."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import note_dump

from vmci.core.evidence import Evidence
from vmci.core.memory import Range, SparseMemory
from vmci.discover import NAMES, RECORDED, STRATEGIES, Inputs, strategy
from vmci.discover.finding import Candidate, Finding
from vmci.discover.guest_note import RESULT, conclude
from vmci.discover.run import discover, find_vmcoreinfo, strategies_for
from vmci.errors import UsageError
from vmci.formats import open_dump
from vmci.producer.linux import KernelLayout, vmcoreinfo_text

TEXT = vmcoreinfo_text(KernelLayout(seed=3))
#: The order README documents ("default order") and the CLI help lists.
DOCUMENTED = ("elf-note", "kdump-header", "address-blob", "fw-cfg-record", "acpi", "memory-scan")


def write(tmp_path: Path, kind: str, text: bytes | None = TEXT) -> Path:
    return note_dump(tmp_path, SparseMemory([Range(0, 4 << 20)]), text, kind)


def test_one_order_with_unique_names_and_ranks() -> None:
    assert NAMES == DOCUMENTED
    assert len({s.rank for s in STRATEGIES}) == len(STRATEGIES)
    assert [s.rank for s in STRATEGIES] == sorted(s.rank for s in STRATEGIES)
    assert RECORDED == ("elf-note", "kdump-header", "address-blob", "fw-cfg-record")
    assert all(strategy(n).name == n for n in NAMES)
    with pytest.raises(UsageError, match="unknown strategy 'guess'; choose from elf-note, kdump-header"):
        strategy("guess")


def test_applicability_decides_what_runs_by_default(tmp_path: Path) -> None:
    with open_dump(write(tmp_path, "elf")) as d:
        assert strategies_for(d, Inputs(), NAMES) == ["elf-note", "acpi", "memory-scan"]
        assert strategies_for(d, Inputs(addr_blob=bytes(8)), RECORDED) == ["elf-note", "address-blob"]
        ran = [f.source for f in find_vmcoreinfo(d).findings]
        assert ran == ["elf-note", "acpi"]  # the note was found: no memory scan
    with open_dump(write(tmp_path, "kdump")) as d:
        assert strategies_for(d, Inputs(fw_cfg_record=bytes(16)), RECORDED) == \
            ["elf-note", "kdump-header", "fw-cfg-record"]


def test_named_strategies_run_in_rank_order_and_say_what_they_lack(tmp_path: Path) -> None:
    with open_dump(write(tmp_path, "elf")) as d:
        disc = discover(d, Inputs(strategies=("memory-scan", "kdump-header", "elf-note")))
        assert [f.source for f in disc.findings] == ["elf-note", "kdump-header", "memory-scan"]
        assert disc.requested == ["memory-scan", "kdump-header", "elf-note"]
        assert disc.chosen is not None and disc.chosen.source == "elf-note"
        with pytest.raises(UsageError, match="strategy fw-cfg-record needs the saved record"):
            discover(d, Inputs(strategies=("fw-cfg-record",)))
        with pytest.raises(UsageError, match="--rfc-offset is 40 or 36, not 44"):
            discover(d, Inputs(rfc_offset=44))


def test_last_resort_runs_when_nothing_else_found(tmp_path: Path) -> None:
    with open_dump(write(tmp_path, "elf", text=None)) as d:
        disc = find_vmcoreinfo(d)
        assert [f.source for f in disc.findings] == ["elf-note", "acpi", "memory-scan"]
        assert not disc.found


def test_every_candidate_names_its_registered_strategy(tmp_path: Path) -> None:
    with open_dump(write(tmp_path, "kdump")) as d:
        disc = find_vmcoreinfo(d, strategies=list(NAMES[:2]) + ["acpi", "memory-scan"])
        sources = {c.source for f in disc.findings for c in f.candidates + f.rejected}
        assert sources and sources <= set(NAMES)
        assert {f.source for f in disc.findings} == {"elf-note", "kdump-header", "acpi", "memory-scan"}


def test_result_steps_carry_a_code_that_the_json_leaves_out() -> None:
    f = Finding("acpi")
    cand = Candidate("acpi", None, None, None)
    cand.evidence.fail("page readable", "not in the dump", 0x1000)
    conclude(f, cand)
    last = f.evidence.steps[-1]
    assert last.code == RESULT and last.action == "result" and last.verdict == "fail"
    assert last.to_dict() == {"action": "result", "paddr": None,
                              "detail": "no usable note: page readable: not in the dump", "verdict": "fail"}
    ev = Evidence()
    ev.ok("anything", "worded freely", code="x.y")
    assert ev.has("x.y") and not ev.has("x.z") and ev.last_failure() is None


def test_the_cli_help_lists_the_registry() -> None:
    import typing

    from vmci.cli.analyze import analyze as command

    option = typing.get_type_hints(command, include_extras=True)["strategy"].__metadata__[0]
    assert option.help.endswith(": " + ", ".join(NAMES) + ".")
