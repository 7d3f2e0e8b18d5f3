"""The ACPI reader (vmci.firmware.acpi) over guest memory made by the producer (QEMU devices + firmware):
RSDP search, RSDT/XSDT walk, SSDT lookup, VCIA/VGIA, and its verdicts on bad or missing data."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmci.core.evidence import Evidence
from vmci.core.memory import Extent, PhysicalMemory, Range, SparseMemory
from vmci.firmware import acpi
from vmci.producer import aml
from vmci.producer.acpi_tables import build_rsdp, build_rsdt, vmcoreinfo_ssdt
from vmci.producer.devices import RfcVmcoreinfoDevice, VmgenidDevice
from vmci.producer.firmware import FirmwareResult, boot


def guest(flavor: str = "seabios", rsdp_revision: int = 0, devices: Sequence[object] | None = None
          ) -> tuple[SparseMemory, FirmwareResult, list[object]]:
    mem = SparseMemory([Range(0, 0x8000000)])
    devs = list(devices) if devices is not None else [VmgenidDevice(), RfcVmcoreinfoDevice()]
    _, _, result = boot(mem, devs, flavor=flavor, rsdp_revision=rsdp_revision,
                        fadt_revision=3 if rsdp_revision >= 2 else 1)
    return mem, result, devs


def actions(ev: Evidence, verdict: str | None = None) -> list[str]:
    return [s.action for s in ev if verdict is None or s.verdict == verdict]


def test_seabios_rsdp_in_fseg_and_vcia() -> None:
    mem, result, _ = guest()
    page = result.allocations["etc/vmcoreinfo"].address
    rsdp, ev = acpi.find_rsdp(mem)
    assert rsdp is not None and rsdp.address == result.rsdp_address
    assert 0xE0000 <= rsdp.address < 0x100000 and rsdp.revision == 0 and rsdp.oem_id == "BOCHS "
    assert "RSDP search in F-segment" in actions(ev, "ok")
    assert "RSDP search in all RAM" not in actions(ev)  # the F-segment hit ends the search
    vcia, ev = acpi.find_named_dword(mem, "VMCOREIN", "VCIA")
    assert vcia == page
    assert {"RSDT checksum", "RSDT entries", "SSDT with OEM table id 'VMCOREIN'"} <= set(actions(ev, "ok"))
    assert not ev.failed
    step = next(s for s in ev if s.action == "Name(VCIA, DWordConst)")
    ssdt, _ = acpi.find_ssdt(mem, "VMCOREIN")
    assert ssdt is not None and step.paddr == ssdt.address + 42
    vgia, _ = acpi.find_named_dword(mem, "VMGENID", "VGIA")
    assert vgia == result.allocations["etc/vmgenid_guid"].address


def test_ovmf_rsdp_elsewhere_and_xsdt() -> None:
    mem, result, devs = guest("ovmf", rsdp_revision=2)
    rsdp, ev = acpi.find_rsdp(mem)
    assert rsdp is not None and rsdp.address == result.rsdp_address
    assert not 0xE0000 <= rsdp.address < 0x100000 and rsdp.address % 16 == 0
    assert rsdp.revision == 2 and rsdp.extended_checksum_ok and rsdp.xsdt_address
    assert "RSDP search in all RAM" in actions(ev, "ok")
    tables, ev = acpi.list_tables(mem, rsdp)
    assert [t.signature for t in tables] == ["FACP", "SSDT", "SSDT"]
    assert all(t.checksum_ok for t in tables)
    assert "XSDT entries" in actions(ev, "ok") and "RSDT entries" not in actions(ev)
    vcia, ev = acpi.find_named_dword(mem, "VMCOREIN", "VCIA", rsdp)
    assert vcia == result.allocations["etc/vmcoreinfo"].address
    assert vcia is not None and vcia + 40 == devs[1].address  # type: ignore[attr-defined]
    # OVMF freed but did not wipe QEMU's own RSDP blob: a stale but valid copy remains
    found = acpi.all_rsdps(mem)
    assert {r.address for r in found} == {rsdp.address, result.allocations["etc/acpi/rsdp"].address}
    assert all(r.valid for r in found)


def test_vmcoreinfo_36_byte_revision() -> None:
    mem, result, _ = guest(devices=[RfcVmcoreinfoDevice(36)])
    table, _ = acpi.find_ssdt(mem, "VMCOREIN")
    assert table is not None
    assert aml.add(aml.name_ref("VCIA"), aml.integer(0x24)) in table.aml
    assert acpi.leading_name_dword(table, "VCIA")[0] == result.allocations["etc/vmcoreinfo"].address


def test_bad_xsdt_falls_back_to_rsdt() -> None:
    mem, _, _ = guest(rsdp_revision=2)
    rsdp, _ = acpi.find_rsdp(mem)
    assert rsdp is not None and rsdp.xsdt_address
    mem.write(rsdp.xsdt_address + 9, b"\x55")  # break the XSDT checksum
    tables, ev = acpi.list_tables(mem, rsdp)
    assert len(tables) == 3
    assert {"XSDT checksum", "XSDT usable"} <= set(actions(ev, "fail"))
    assert "RSDT entries" in actions(ev, "ok")


def test_bad_ssdt_checksum_is_reported() -> None:
    mem, result, _ = guest()
    table, _ = acpi.find_ssdt(mem, "VMCOREIN")
    assert table is not None
    mem.write(table.address + 60, b"\xee")  # somewhere in the AML
    bad, ev = acpi.find_ssdt(mem, "VMCOREIN")
    assert bad is not None and not bad.checksum_ok
    fails = [s for s in ev if s.verdict == "fail"]
    assert [s.action for s in fails] == ["SSDT checksum", "SSDT with OEM table id 'VMCOREIN'"]
    assert fails[0].paddr == table.address and "bad checksum" in fails[1].detail
    # the VCIA value is still readable, the evidence says it came from a damaged table
    vcia, ev = acpi.find_named_dword(mem, "VMCOREIN", "VCIA")
    assert vcia == result.allocations["etc/vmcoreinfo"].address and ev.failed


def test_bad_rsdp_checksum_is_reported() -> None:
    mem, result, _ = guest()
    assert result.rsdp_address is not None
    mem.write(result.rsdp_address + 9, b"X")  # OEM id byte
    rsdp, ev = acpi.find_rsdp(mem)
    assert rsdp is None
    assert "RSDP checksum (20 bytes)" in actions(ev, "fail")
    assert ev.steps[-1].action == "RSDP" and ev.steps[-1].verdict == "fail"
    table, ev = acpi.find_ssdt(mem, "VMCOREIN")
    assert table is None and ev.failed


def test_missing_ssdt_is_reported() -> None:
    mem, _, _ = guest(devices=[VmgenidDevice()])
    vcia, ev = acpi.find_named_dword(mem, "VMCOREIN", "VCIA")
    assert vcia is None
    last = ev.steps[-1]
    assert last.verdict == "fail" and "VMCOREIN" in last.action and "SSDT/VMGENID" in last.detail


def test_no_acpi_at_all() -> None:
    mem = SparseMemory([Range(0, 0x200000)])
    mem.write(0xF0001, b"RSD PTR ")  # not 16-byte aligned: not a candidate
    rsdp, ev = acpi.find_rsdp(mem)
    assert rsdp is None and ev.failed
    assert [s.detail for s in ev if s.action.startswith("RSDP search")] == [
        "0 candidate(s) with the signature, none valid"] * 2


def test_leading_name_shapes() -> None:
    def table(*terms: bytes) -> acpi.Table:
        data = aml.definition_block("SSDT", *terms, oem_table_id="VMCOREIN")
        return acpi.Table(0x1000, "SSDT", len(data), 1, "BOCHS ", "VMCOREIN", True, data)

    value, ev = acpi.leading_name_dword(table(aml.name("VCIA", aml.byte_const(5))), "VCIA")
    assert value is None and "found ByteConst = 0x5" in ev.steps[-1].detail
    value, ev = acpi.leading_name_dword(table(aml.name_dword("VGIA", 7)), "VCIA")
    assert value is None and ev.steps[-1].detail == "found VGIA"
    value, ev = acpi.leading_name_dword(table(aml.scope("\\_SB")))
    assert value is None and "NameOp" in ev.steps[-1].detail
    value, ev = acpi.leading_name_dword(table(aml.name_dword("VCIA", 0x3FFFF000)))
    assert value == 0x3FFFF000 and ev.steps[-1].paddr == 0x1000 + 42


def test_fetch_table_bounds() -> None:
    mem = SparseMemory([Range(0, 0x10000)])
    good = vmcoreinfo_ssdt()
    for addr, length in ((0x1000, 0xFFFFFFFF), (0x2000, 10), (0xFFE0, 0x100)):
        mem.write(addr, good[:4] + length.to_bytes(4, "little") + good[8:32])
        table, ev = acpi.fetch_table(mem, addr)
        assert table is None and ev.failed
    table, ev = acpi.fetch_table(mem, 0x20000)
    assert table is None and ev.steps[-1].detail == "not in the dump"
    mem.write(0x3000, good)
    table, ev = acpi.fetch_table(mem, 0x3000, "DSDT")
    assert table is None and "found b'SSDT'" in ev.steps[-1].detail
    table, ev = acpi.fetch_table(mem, 0x3000, "SSDT")
    assert table is not None and table.checksum_ok and table.oem_table_id == "VMCOREIN"


class ChoppyMemory(PhysicalMemory):
    """One range of bytes handed out in small, oddly sized extents."""

    def __init__(self, start: int, data: bytes, piece: int = 13) -> None:
        self.start, self.data, self.piece = start, data, piece

    @property
    def ranges(self) -> Sequence[Range]:
        return [Range(self.start, len(self.data))]

    def extent(self, paddr: int, limit: int) -> Extent:
        off = paddr - self.start
        if not 0 <= off < len(self.data):
            return Extent(None, limit, "hole")
        n = min(limit, self.piece - (paddr % self.piece), len(self.data) - off)
        return Extent(self.data[off : off + n], n)


def test_rsdp_split_across_chunks() -> None:
    image = bytearray(0x2000)
    rsdt = build_rsdt([])
    image[0x100 : 0x100 + len(rsdt)] = rsdt
    rsdp = build_rsdp(0x300000 + 0x100)
    image[0x1A30 : 0x1A30 + 20] = rsdp
    image[0x1238 : 0x1240] = b"RSD PTR "  # misaligned decoy
    mem = ChoppyMemory(0x300000, bytes(image))
    assert 0x301A30 % 13 > 13 - 8  # the signature straddles two extents
    assert list(acpi.scan_signature(mem, b"RSD PTR ")) == [0x301A30]
    found, _ = acpi.find_rsdp(mem)
    assert found is not None and found.address == 0x301A30
    tables, _ = acpi.list_tables(mem, found)
    assert tables == []


def test_ovmf_probe_hazard() -> None:
    mem, result, _ = guest("ovmf")
    page = result.allocations["etc/vmcoreinfo"].address
    kind, ev = acpi.ovmf_probe_at(mem, page)
    assert kind is None and ev.steps[-1].verdict == "ok"
    # without the suppressor, a page that happens to start like a table would be taken for one
    ssdt = vmcoreinfo_ssdt()
    assert acpi.ovmf_probe(ssdt + bytes(4096 - len(ssdt))) == "SDT"
    mem.write(page, ssdt)
    kind, ev = acpi.ovmf_probe_at(mem, page)
    assert kind == "SDT" and ev.failed
    facs = b"FACS" + (64).to_bytes(4, "little") + bytes(56)
    assert acpi.ovmf_probe(facs) == "FACS"
    assert acpi.ovmf_probe(facs[:40]) is None  # FACS needs 64 bytes remaining, and no SDT checksum
    assert acpi.ovmf_probe(bytes(4096)) is None  # Length 0 < 36
    assert acpi.ovmf_probe(ssdt[:-1]) is None  # Length > remaining
    broken = bytearray(ssdt)
    broken[9] ^= 1
    assert acpi.ovmf_probe(bytes(broken)) is None
    assert acpi.ovmf_probe_at(mem, 0x9000000)[0] is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_garbage_memory_never_raises(data: st.DataObject) -> None:
    mem = SparseMemory([Range(0xE0000, 0x20000), Range(0x100000, 0x4000)])
    for _ in range(data.draw(st.integers(1, 4))):
        addr = 0xE0000 + 16 * data.draw(st.integers(0, 0x1FFE))
        revision = data.draw(st.sampled_from([0, 1, 2, 3, 255]))
        root = data.draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0x100000, 0x103FFF)))
        raw = bytearray(build_rsdp(root, revision=min(revision, 2), xsdt_address=root))
        raw[15] = revision
        if data.draw(st.booleans()):
            raw[8] = (raw[8] - sum(raw[:20])) & 0xFF
        mem.write(addr, bytes(raw[: min(len(raw), 0x100000 - addr)]))
    for _ in range(data.draw(st.integers(0, 3))):
        addr = data.draw(st.integers(0x100000, 0x103F00))
        mem.write(addr, data.draw(st.binary(min_size=1, max_size=0x100)))
    rsdp, ev = acpi.find_rsdp(mem)
    assert isinstance(ev, Evidence) and (rsdp is None or rsdp.valid)
    if rsdp is not None:
        tables, _ = acpi.list_tables(mem, rsdp)
        assert all(isinstance(t, acpi.Table) for t in tables)
    value, ev = acpi.find_named_dword(mem, "VMCOREIN", "VCIA")
    assert value is None or isinstance(value, int)
    acpi.all_rsdps(mem)


@given(st.binary(max_size=64))
def test_aml_garbage_gives_evidence(blob: bytes) -> None:
    t = acpi.Table(0, "SSDT", 36 + len(blob), 1, "", "", True, bytes(36) + blob)
    value, ev = acpi.leading_name_dword(t, "VCIA")
    assert (value is None) == ev.failed


@pytest.mark.parametrize("rsdp_revision", [0, 2])
def test_reader_and_qemu_agree(rsdp_revision: int) -> None:
    mem, _, devs = guest("seabios", rsdp_revision)
    vgen, vmci = devs
    assert acpi.find_named_dword(mem, "VMGENID", "VGIA")[0] == vgen.address - 40  # type: ignore[attr-defined]
    assert acpi.find_named_dword(mem, "VMCOREIN", "VCIA")[0] == vmci.address - 40  # type: ignore[attr-defined]


@given(st.integers(0, 64), st.integers(1, 40), st.lists(st.integers(0, 600), max_size=6),
       st.binary(max_size=64))
def test_scan_signature_matches_brute_force(start: int, piece: int, spots: list[int], noise: bytes) -> None:
    image = bytearray(noise.ljust(640, b"R"))
    for spot in spots:
        image[spot : spot + 8] = b"RSD PTR "
    mem = ChoppyMemory(0x1000 + start, bytes(image), piece)
    expected = [0x1000 + start + i for i in range(len(image) - 7)
                if image[i : i + 8] == b"RSD PTR " and (0x1000 + start + i) % 16 == 0]
    assert list(acpi.scan_signature(mem, b"RSD PTR ")) == expected
