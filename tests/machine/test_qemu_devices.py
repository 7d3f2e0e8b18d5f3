"""QEMU device state: the vmcoreinfo (upstream record, RFC blob) and vmgenid sections decoded into
typed records.  Payloads are packed here by hand from QEMU's vmstate field lists
(hw/misc/vmcoreinfo.c ``vmstate_vmcoreinfo``: bool + u16 + u16 + u32 + u64, big-endian;
the address blobs: 8 raw little-endian bytes), not by vmci's layouts."""

from __future__ import annotations

import struct

from vmci.core.evidence import Evidence
from vmci.core.saved_state import DeviceState, SavedDevices, VmcoreinfoRecord
from vmci.layouts.fw_cfg import RFC_OFFSET_V1, RFC_OFFSET_V2
from vmci.machine.qemu_devices import RFC_OFFSETS, decode_section, page_of, parse_addr_blob


def decode(idstr: str, raw: bytes, fields: tuple[str, ...] = ()) -> DeviceState:
    return decode_section(idstr, raw, section_id=7, version_id=1, offset=0x1234, field_names=fields)


def test_upstream_record() -> None:
    raw = struct.pack(">?HHIQ", True, 0, 1, 4132, 0x2C4D000)
    dev = decode("vmcoreinfo", raw, ("has_vmcoreinfo", "vmcoreinfo.host_format"))
    assert dev.layout == "upstream" and dev.addr_blob is None
    assert dev.record == VmcoreinfoRecord(host_format=0, guest_format=1, size=4132, paddr=0x2C4D000)
    saved = SavedDevices(vmcoreinfo=dev)
    assert saved.vmcoreinfo_record == dev.record and saved.vmcoreinfo_addr_blob is None
    assert saved.to_dict()["vmcoreinfo"] == {
        "section_id": 7, "instance_id": 0, "version_id": 1, "offset": 0x1234, "raw": raw.hex(),
        "layout": "upstream", "has_vmcoreinfo": True, "host_format": 0, "guest_format": 1,
        "size": 4132, "paddr": 0x2C4D000,
    }
    assert saved.inputs_dict() == {
        "fw_cfg_vmcoreinfo_record": {"host_format": 0, "guest_format": 1, "size": 4132, "paddr": 0x2C4D000}
    }


def test_rfc_blob_and_vmgenid_blob() -> None:
    rfc = decode("vmcoreinfo", struct.pack("<Q", 0x3FE028))
    gen = decode("vmgenid", struct.pack("<Q", 0x3FF028))
    assert (rfc.layout, rfc.record, rfc.addr_blob) == ("rfc", None, struct.pack("<Q", 0x3FE028))
    assert (gen.layout, gen.addr_blob) == (None, struct.pack("<Q", 0x3FF028))
    saved = SavedDevices(vmcoreinfo=rfc, vmgenid=gen)
    assert saved.vmcoreinfo_addr_blob == struct.pack("<Q", 0x3FE028) and saved.vmcoreinfo_record is None
    assert saved.vmgenid_addr_blob == struct.pack("<Q", 0x3FF028)
    assert saved.to_dict()["vmcoreinfo"]["vmcoreinfo_addr"] == 0x3FE028
    assert saved.to_dict()["vmgenid"]["vmgenid_addr"] == 0x3FF028
    assert saved.inputs_dict() == {"vmcoreinfo_addr_blob": "28e03f0000000000",
                                   "vmgenid_addr_blob": "28f03f0000000000"}


def test_payloads_of_other_shapes_stay_raw() -> None:
    # 17 bytes whose first byte is no bool, and a field list without has_vmcoreinfo
    assert decode("vmcoreinfo", b"\x02" + bytes(16)).layout == "unknown"
    assert decode("vmcoreinfo", bytes(17), ("something_else",)).layout == "unknown"
    odd = decode("vmgenid", bytes(12))
    assert (odd.layout, odd.addr_blob) == ("unknown", None)
    assert SavedDevices(vmgenid=odd).vmgenid_addr_blob is None


def test_rfc_offsets_are_the_layout_declarations() -> None:
    assert RFC_OFFSETS == (RFC_OFFSET_V1, RFC_OFFSET_V2) == (40, 36)


def test_address_blob_checks() -> None:
    ev = Evidence()
    assert parse_addr_blob(struct.pack("<Q", 0x1_0000_1028), ev) == 0x1_0000_1028
    assert [s.verdict for s in ev] == ["ok", "warn"]  # QEMU reads only the low 32 bits
    ev = Evidence()
    assert parse_addr_blob(bytes(8), ev) is None and ev.failed
    ev = Evidence()
    assert page_of(0x5024, 36, ev) == 0x5000 and not ev.failed
    ev = Evidence()
    assert page_of(0x5024, 40, ev) is None
    assert "rfc_offset=36" in ev.steps[-1].detail
