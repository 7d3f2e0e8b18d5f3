"""Synthesized VMCOREINFO: values equal the generator's truth, marked, accepted by the CLI and lint."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import guest_dump
from typer.testing import CliRunner

from vmci.cli import app
from vmci.discover.run import find_vmcoreinfo
from vmci.errors import NotFoundError
from vmci.formats import open_dump
from vmci.kernel.synthesize import MARK, is_synthesized, release_via, synthesize
from vmci.kernel.vmcoreinfo import DRGN_REQUIRED, VmcoreInfo
from vmci.producer.scenario import Guest, write_dump


def noteless(tmp_path: Path, fmt: str = "elf", processes: int = 0, **kw: object) -> tuple[Guest, Path]:
    """A guest whose kernel note and text are zeroed: only the page tables and the image survive."""
    return guest_dump(tmp_path, fmt, wipe=True, processes=processes, name="noteless", **kw)


@pytest.mark.parametrize(
    ("la57", "pti", "fmt"),
    [(False, False, "elf"), (True, True, "kdump"), (False, True, "kdump-flat"), (True, False, "elf-paging")],
)
def test_synthesized_values_equal_truth(tmp_path: Path, la57: bool, pti: bool, fmt: str) -> None:
    g, path = noteless(tmp_path, fmt, seed=21, la57=la57, pti=pti, cpus=2)
    k, t = g.kernel, g.tables
    assert k is not None and t is not None
    with open_dump(path) as d:
        assert not find_vmcoreinfo(d).found
        s = synthesize(d)
    vi = s.vmcoreinfo
    assert s.text.startswith(f"OSRELEASE={k.osrelease}\n{MARK}\n".encode()) and is_synthesized(s.text)
    assert vi.pagesize == 4096 and vi.symbol("swapper_pg_dir") == t.swapper_pg_dir
    assert vi.kerneloffset == k.kaslr_offset and vi.phys_base.value == k.phys_base  # type: ignore[union-attr]
    assert vi.pgtable_l5_enabled is la57
    assert not [w for w in vi.warnings if w.code in ("missing-key", "missing-kaslr-key", "bad-value")]
    assert set(DRGN_REQUIRED) <= set(vi.keys()) and "SYMBOL(swapper_pg_dir)" in s.sources
    # the text's own address reads the release back out of the dump through the page tables
    from vmci.arch.x86_64.paging import page_tables
    from vmci.kernel.vmem import KernelMemory

    with open_dump(path) as d:
        rel = release_via(vi, KernelMemory(d.memory, page_tables(t.pgd, la57=la57)).read)
    assert rel == k.osrelease


def test_swapper_found_from_a_process_cr3(tmp_path: Path) -> None:
    g, path = noteless(tmp_path, seed=22, pti=True, cpus=2, processes=1)
    g.cpus = g.cpus[1:]  # only the vCPU on a user PGD
    with path.open("wb") as f:
        write_dump(g, f, "elf")
    with open_dump(path) as d:
        assert d.cpus[0].cr3 != g.tables.cr3  # type: ignore[union-attr]
        s = synthesize(d)
    assert s.vmcoreinfo.symbol("swapper_pg_dir") == g.tables.swapper_pg_dir  # type: ignore[union-attr]
    assert "kernel half" in s.sources["SYMBOL(swapper_pg_dir)"]


def test_no_paging_cpu_cannot_synthesize(tmp_path: Path) -> None:
    raw = tmp_path / "zero.raw"
    raw.write_bytes(bytes(1 << 20))
    with open_dump(raw, format="raw") as d, pytest.raises(NotFoundError, match="cannot synthesize"):
        synthesize(d)


def test_cli_vmcoreinfo_synthesize(tmp_path: Path) -> None:
    g, path = noteless(tmp_path, seed=23)
    out = tmp_path / "vi.txt"
    plain = CliRunner().invoke(app, ["vmcoreinfo", str(path), "-o", str(out)])
    assert plain.exit_code == 1 and not out.exists()
    res = CliRunner().invoke(app, ["vmcoreinfo", str(path), "-o", str(out), "--synthesize"])
    assert res.exit_code == 0, res.output
    vi = VmcoreInfo.parse(out.read_bytes())
    assert is_synthesized(vi) and vi.osrelease == g.kernel.osrelease  # type: ignore[union-attr]
    assert not is_synthesized(g.placed.text)
