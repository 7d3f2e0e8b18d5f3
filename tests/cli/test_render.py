"""Human output of the typed results: how a value is shown comes from its field's declaration."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from vmci.analysis.analyze import analyze, dump_info
from vmci.analysis.result import DumpInfo
from vmci.cli import render
from vmci.formats import open_dump

DATA = Path(__file__).resolve().parents[2] / "testdata"


def captured(monkeypatch, fn, *args) -> str:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    monkeypatch.setattr(render, "console", lambda: Console(file=out, width=200, highlight=False,
                                                            soft_wrap=True, no_color=True))
    fn(*args)
    return out.getvalue()


def test_hex_facts_are_declared_not_guessed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    info = DumpInfo(path="x", format="raw", description="d", arch="x86_64",
                    byte_order="little", memory_size=0, ranges=(), notes=(), cpus=(), warnings=(),
                    facts={"offset_note": 70000, "fake_addr": 70000, "nested": {"size": 8192, "count": 8192},
                           "small_size": 4096})
    text = captured(monkeypatch, render.render_info, info)
    assert "offset_note: 0x11170" in text  # declared: hexadecimal
    assert "fake_addr: 70000" in text  # looks like an address by name, but is not declared one
    assert "nested: size=0x2000, count=8192" in text
    assert "small_size: 4096" in text


def test_key_values_follow_field_metadata(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with open_dump(DATA / "rfc-seabios.kdump") as d:
        r = analyze(d)
        info = dump_info(d)
    kv = r.vmcoreinfo.key_values
    assert kv is not None and kv.phys_base is not None and kv.phys_base < 0
    text = captured(monkeypatch, render.render_vmcoreinfo, r.vmcoreinfo)
    assert f"phys_base     {kv.phys_base} ({kv.phys_base & ((1 << 64) - 1):#x})" in text
    assert f"KERNELOFFSET  {kv.kerneloffset:#x}" in text and "CRASHTIME     -" in text
    plain = kv.replace(phys_base=0x1000000)
    section = r.vmcoreinfo.replace(key_values=plain)
    text = captured(monkeypatch, render.render_vmcoreinfo, section)
    assert "phys_base     0x1000000" in text
    text = captured(monkeypatch, render.render_info, info)
    assert f"offset_vmcoreinfo: {d.facts['offset_vmcoreinfo']:#x}" in text
