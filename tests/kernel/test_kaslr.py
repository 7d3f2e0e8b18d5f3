"""KASLR from the page tables against the generator's truth, the verdict against VMCOREINFO, symbols."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import guest_dump, schema_errors
from typer.testing import CliRunner

from vmci.analysis.analyze import analyze
from vmci.analysis.kaslr import kaslr_for_dump
from vmci.cli import app
from vmci.errors import FormatError
from vmci.formats import open_dump
from vmci.kernel.kaslr import kaslr_report
from vmci.kernel.symbols import KernelSymbols, load_symbols
from vmci.kernel.vmcoreinfo import VmcoreInfo
from vmci.kernel.vmem import KernelMemory
from vmci.producer.scenario import Guest


def guest(
    tmp_path: Path, fmt: str = "elf", *, wipe: bool = False, processes: int = 0, **kw: object
) -> tuple[Guest, Path]:
    """A generated guest written as ``fmt`` (:func:`conftest.guest_dump`)."""
    return guest_dump(tmp_path, fmt, wipe=wipe, processes=processes, **kw)


@pytest.mark.parametrize("la57", [False, True])
@pytest.mark.parametrize("pti", [False, True])
@pytest.mark.parametrize("fmt", ["elf", "kdump-flat"])
def test_page_tables_match_truth_and_note(tmp_path: Path, la57: bool, pti: bool, fmt: str) -> None:
    g, path = guest(tmp_path, fmt, seed=11, la57=la57, pti=pti, cpus=3, processes=2)
    assert g.kernel is not None
    with open_dump(path) as d:
        assert len({c.cr3 for c in d.cpus}) == 3  # kernel PGD, two user PGDs
        rep = kaslr_for_dump(d, scan=True, deep=True)
    assert (rep.kerneloffset, rep.phys_base) == (g.kernel.kaslr_offset, g.kernel.phys_base)
    assert rep.verdict == "agree" and rep.method == "vmcoreinfo" and not rep.warnings
    pt = rep.page_tables
    assert pt is not None and pt["la57"] is la57 and pt["vcpus_agree"]
    assert (pt["kerneloffset"], pt["phys_base"]) == (g.kernel.kaslr_offset, g.kernel.phys_base)
    co = rep.corroboration
    assert co["banner"]["release"] == g.kernel.osrelease and co["uts_release"]["ok"] and co["idt"]["ok"]
    assert co["swapper_pg_dir"]["ok"] and co["swapper_pg_dir"]["va"] == g.tables.swapper_pg_dir  # type: ignore


def test_negative_phys_base_and_one_gib_direct_map(tmp_path: Path) -> None:
    g, path = guest(tmp_path, seed=2, kaslr_offset=0x4000000, phys_base=-0x2000000, wipe=True)
    assert g.tables is not None and g.banner is not None
    with open_dump(path) as d:
        rep = kaslr_for_dump(d, scan=True)
        assert rep.vmcoreinfo is None and rep.verdict == "page-tables-only" and rep.method == "page-tables"
        assert (rep.kerneloffset, rep.phys_base) == (0x4000000, -0x2000000)
        # the direct map uses 1 GiB leaves: the banner reads the same there as through the text mapping
        kmem = KernelMemory(d.memory, rep.result.tables)  # type: ignore[union-attr]
        via_text = kmem.read(g.banner[0], 40)
        via_direct = kmem.read(g.tables.page_offset + g.banner[1], 40)
    assert via_text == via_direct == g.banner[2][:40]


def test_nokaslr_is_default(tmp_path: Path) -> None:
    _, path = guest(tmp_path, seed=4, kaslr=False, wipe=True)
    with open_dump(path) as d:
        rep = kaslr_for_dump(d)
    assert (rep.kerneloffset, rep.phys_base) == (0, 0)
    assert rep.page_tables is not None and rep.page_tables["text_va"] == 0xFFFFFFFF81000000


def test_conflict_and_incomplete_text(tmp_path: Path) -> None:
    g, path = guest(tmp_path, seed=5)
    text = g.placed.text.decode()
    koff = g.kernel.kaslr_offset  # type: ignore[union-attr]
    wrong = VmcoreInfo.parse(text.replace(f"KERNELOFFSET={koff:x}\n", f"KERNELOFFSET={koff + 0x200000:x}\n"))
    lacking = VmcoreInfo.parse(
        "".join(ln + "\n" for ln in text.splitlines() if not ln.startswith("NUMBER(phys_base)"))
    )
    with open_dump(path) as d:
        bad = kaslr_report(d, vmcoreinfo=wrong, vmcoreinfo_source="test")
        part = kaslr_report(d, vmcoreinfo=lacking, vmcoreinfo_source="test")
    assert bad.verdict == "conflict" and any("KERNELOFFSET" in w for w in bad.warnings)
    assert bad.evidence.failed and bad.kerneloffset == koff + 0x200000  # the text wins, loudly
    assert part.verdict == "agree" and part.method == "vmcoreinfo+page-tables"
    assert part.phys_base == g.kernel.phys_base  # type: ignore[union-attr]


def system_map(g: Guest) -> str:
    assert g.kernel is not None and g.banner is not None
    names = {
        "_text": 0xFFFFFFFF81000000,
        "_stext": 0xFFFFFFFF81000000,
        "linux_banner": g.banner[0] - g.kernel.kaslr_offset,
        "init_uts_ns": g.kernel.link("init_uts_ns"),
        "swapper_pg_dir": g.kernel.link("swapper_pg_dir"),
    }
    return "".join(f"{a:016x} D {n}\n" for n, a in sorted(names.items(), key=lambda x: x[1]))


def test_system_map_cross_checks(tmp_path: Path) -> None:
    g, path = guest(tmp_path, seed=8, wipe=True)
    smap = tmp_path / "System.map"
    smap.write_text(system_map(g))
    syms = load_symbols(smap)
    with open_dump(path) as d:
        rep = kaslr_for_dump(d, symbols=syms)
    koff = g.kernel.kaslr_offset  # type: ignore[union-attr]
    assert rep.symbols is not None and rep.symbols["text_matches_page_tables"]
    assert rep.symbols["_text"] == 0xFFFFFFFF81000000 + koff
    assert rep.corroboration["banner"]["how"] == "linux_banner" and rep.corroboration["banner"]["ok"]
    assert rep.corroboration["uts_release"]["release"] == g.kernel.osrelease  # type: ignore[union-attr]
    # a System.map of another build (shifted _text) is caught
    bad = KernelSymbols(
        "other",
        {
            **syms.symbols,
            "_text": syms.symbols["_text"] + 0x200000,
            "_stext": syms.symbols["_stext"] + 0x200000,
        },
    )
    with open_dump(path) as d:
        rep2 = kaslr_for_dump(d, symbols=bad)
    assert rep2.kerneloffset == koff - 0x200000 and not rep2.corroboration["banner"]["ok"]


def test_load_symbols_rejects_stub_and_bad_bzimage(tmp_path: Path) -> None:
    stub = tmp_path / "System.map"
    stub.write_text("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
    with pytest.raises(FormatError, match="neither _text nor _stext"):
        load_symbols(stub)
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(bytes(0x202) + b"HdrS" + bytes(0x60))
    with pytest.raises(FormatError, match="payload"):
        load_symbols(bz)


def test_analyze_and_cli_share_the_kaslr_object(tmp_path: Path) -> None:
    g, path = guest(tmp_path, seed=9, cpus=2)
    with open_dump(path) as d:
        r = analyze(d, vmgenid=False).to_dict()
    assert schema_errors(r) == []
    k = r["kaslr"]
    assert k["verdict"] == "agree" and k["page_tables"]["phys_base"] == g.kernel.phys_base  # type: ignore
    out = CliRunner().invoke(app, ["kaslr", str(path), "--json", "--scan"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output)
    assert cli.pop("schema") == 1
    assert cli["kerneloffset"] == k["kerneloffset"] and cli["verdict"] == k["verdict"]
    assert {e["action"] for e in cli["evidence"]} >= {"page-tables", "verdict", "banner"}
    human = CliRunner().invoke(app, ["kaslr", str(path)])
    assert human.exit_code == 0 and "KERNELOFFSET" in human.output and "page tables" in human.output


def test_cli_kaslr_without_paging_cpus_exits_1(tmp_path: Path) -> None:
    raw = tmp_path / "zero.raw"
    raw.write_bytes(bytes(1 << 20))
    out = CliRunner().invoke(app, ["kaslr", str(raw), "--format", "raw", "--json"])
    assert out.exit_code == 1 and json.loads(out.output)["kerneloffset"] is None
