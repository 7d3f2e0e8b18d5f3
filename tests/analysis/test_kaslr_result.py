"""KaslrResult: one type for both JSON forms of the ``kaslr`` object, the exit policy, the facade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vmci
from vmci.analysis.kaslr import KaslrResult, kaslr_for_dump, kaslr_result
from vmci.core.dump import Dump
from vmci.core.memory import Range, SparseMemory
from vmci.formats import open_dump
from vmci.kernel.vmcoreinfo import VmcoreInfo


def test_without_a_paging_vcpu_the_short_form(tmp_path: Path) -> None:
    mem = SparseMemory([Range(0, 1 << 20)])
    dump = Dump(path=tmp_path / "x", format="raw", description="", memory=mem)
    text = VmcoreInfo.parse(b"OSRELEASE=6.1\nKERNELOFFSET=2c000000\nNUMBER(phys_base)=-346030080\n")
    r = kaslr_result(dump, vmcoreinfo=text, source="elf-note")
    assert (r.kerneloffset, r.phys_base, r.method, r.verdict) == (0x2C000000, -346030080, "vmcoreinfo",
                                                                   "vmcoreinfo-only")
    assert not r.compared and not r.failed and r.warnings == []
    assert r.to_dict() == {"kerneloffset": 0x2C000000, "phys_base": -346030080, "method": "vmcoreinfo"}
    none = kaslr_result(dump, vmcoreinfo=None, source=None)
    assert none.failed and none.verdict == "none"
    assert list(none.to_dict()) == ["kerneloffset", "phys_base", "method"]


def test_with_paging_vcpus_the_report(vmci_dump: Any) -> None:
    path, truth = vmci_dump("elf", seed=41)
    k = truth["kernel"]
    with open_dump(path) as d:
        note = VmcoreInfo.parse(d.notes_named("VMCOREINFO")[0].desc)
        r = kaslr_result(d, vmcoreinfo=note, source="elf-note")
        rep = kaslr_for_dump(d)
    assert isinstance(r, KaslrResult) and r.compared and r.report is not None and not r.failed
    assert (r.kerneloffset, r.phys_base, r.verdict) == (k["kaslr_offset"], k["phys_base"], "agree")
    out = r.to_dict()
    assert out == rep.to_dict()
    assert out["evidence"] == [s.to_dict() for s in r.report.evidence]
    assert out["page_tables"]["text_va"] == k["text_va"] and out["page_tables"]["root"] == k["pgd_paddr"]
    assert vmci.kaslr_for_dump is kaslr_for_dump  # the public facade
