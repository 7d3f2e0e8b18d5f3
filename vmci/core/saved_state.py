"""Typed headers of saved VM state: a QEMU migration stream, and the libvirt save image around one.

The migration reader fills :class:`MigrationHeader` (what the stream says about itself and its
RAMBlocks) and :class:`SavedDevices` (the device state QEMU keeps outside guest RAM that vmci
uses: the vmcoreinfo device's record or address blob, vmgenid's address blob); the libvirt
reader adds :class:`LibvirtHeader`.  Discovery, KASLR and vmgenid read these fields, never
free-form keys.  ``to_dict`` gives the JSON view ``vmci info`` prints (the dump's ``facts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vmci.core.headers import ContainerHeader

VmcoreinfoLayout = Literal["upstream", "rfc", "unknown"]


@dataclass(frozen=True)
class VmcoreinfoRecord:
    """Upstream QEMU's (>= 2.11) vmcoreinfo device state: whether the guest wrote ``etc/vmcoreinfo``
    and the record it wrote there (QEMU include/hw/misc/vmcoreinfo.h, ``VMCoreInfoState``)."""

    host_format: int = 1
    guest_format: int = 1
    size: int = 0
    paddr: int = 0
    has_vmcoreinfo: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"has_vmcoreinfo": self.has_vmcoreinfo, "host_format": self.host_format,
                "guest_format": self.guest_format, "size": self.size, "paddr": self.paddr}


@dataclass(frozen=True)
class DeviceSection:
    """One FULL device section of a stream: where its header starts and how long its payload is."""

    idstr: str
    instance_id: int
    version_id: int
    section_id: int
    offset: int  # file offset of the section header
    size: int  # payload bytes (header and footer excluded)

    @property
    def payload_offset(self) -> int:
        """File offset of the payload: type, section id, idstr, instance id and version come first."""
        return self.offset + 1 + 4 + 1 + len(self.idstr.encode("latin-1")) + 4 + 4

    def to_dict(self) -> dict[str, Any]:
        return {"idstr": self.idstr, "instance_id": self.instance_id, "version_id": self.version_id,
                "section_id": self.section_id, "offset": self.offset, "size": self.size}


@dataclass(frozen=True)
class DeviceState:
    """The saved state of a device vmci decodes (``vmcoreinfo``, ``vmgenid``).

    ``layout`` says which vmcoreinfo device saved it (None for vmgenid when it decoded);
    ``record`` is the upstream device's state, ``addr_blob`` the 8-byte little-endian address
    blob of the RFC vmcoreinfo device or of vmgenid.
    """

    idstr: str
    section_id: int
    instance_id: int
    version_id: int
    offset: int  # file offset of the payload
    raw: bytes
    layout: VmcoreinfoLayout | None = None
    record: VmcoreinfoRecord | None = None
    addr_blob: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"section_id": self.section_id, "instance_id": self.instance_id,
                               "version_id": self.version_id, "offset": self.offset, "raw": self.raw.hex()}
        blob = int.from_bytes(self.addr_blob, "little") if self.addr_blob is not None else None
        if self.idstr == "vmgenid" and blob is not None:
            out["vmgenid_addr"] = blob
        if self.layout is not None:
            out["layout"] = self.layout
        if self.record is not None:
            out |= self.record.to_dict()
        elif self.layout == "rfc":
            out["vmcoreinfo_addr"] = blob
        return out


@dataclass(frozen=True)
class SavedDevices:
    """The vmcoreinfo and vmgenid device state of a saved VM (None: the stream has no such section)."""

    vmcoreinfo: DeviceState | None = None
    vmgenid: DeviceState | None = None

    @property
    def vmcoreinfo_record(self) -> VmcoreinfoRecord | None:
        """The upstream device's record: what ``fw-cfg-record`` discovery checks."""
        return self.vmcoreinfo.record if self.vmcoreinfo is not None else None

    @property
    def vmcoreinfo_addr_blob(self) -> bytes | None:
        """The RFC device's ``etc/vmcoreinfo-addr`` (page + 40 or + 36): what ``address-blob`` walks."""
        dev = self.vmcoreinfo
        return dev.addr_blob if dev is not None and dev.layout == "rfc" else None

    @property
    def vmgenid_addr_blob(self) -> bytes | None:
        """vmgenid's ``vmgenid_addr`` (GUID page + 40)."""
        return self.vmgenid.addr_blob if self.vmgenid is not None else None

    def to_dict(self) -> dict[str, Any]:
        """By device name, as the stream names them (``facts["devices"]``)."""
        return {d.idstr: d.to_dict() for d in (self.vmcoreinfo, self.vmgenid) if d is not None}

    def inputs_dict(self) -> dict[str, Any]:
        """What discovery and vmgenid take from the saved state (``facts["saved_state"]``)."""
        out: dict[str, Any] = {}
        if self.vmcoreinfo_addr_blob is not None:
            out["vmcoreinfo_addr_blob"] = self.vmcoreinfo_addr_blob.hex()
        if self.vmcoreinfo_record is not None:
            rec = self.vmcoreinfo_record.to_dict()
            out["fw_cfg_vmcoreinfo_record"] = {k: v for k, v in rec.items() if k != "has_vmcoreinfo"}
        if self.vmgenid_addr_blob is not None:
            out["vmgenid_addr_blob"] = self.vmgenid_addr_blob.hex()
        return out


@dataclass(frozen=True)
class RamBlockInfo:
    """One RAMBlock: its size, where it is mapped (None: by name only) and what the stream sent."""

    name: str
    size: int
    gpa: tuple[tuple[int, int], ...] | None  # (guest-physical start, size) per mapped piece
    pages: int  # pages sent with data
    zero_pages: int
    absent_pages: int  # pages the stream never sent

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size,
                "gpa": [list(p) for p in self.gpa] if self.gpa is not None else None,
                "pages": self.pages, "zero_pages": self.zero_pages, "absent_pages": self.absent_pages}


@dataclass(frozen=True)
class MigrationHeader:
    """What a QEMU migration stream says about itself, its machine and its RAM."""

    stream_version: int
    machine: str | None  # the machine type (QEMU_VM_CONFIGURATION), e.g. ``pc-q35-7.2``
    machine_family: str | None  # ``q35``, ``pc`` or None (RAM then by block name only)
    family_guessed: bool  # the family comes from device names, not from a machine type
    page_size: int
    capabilities: tuple[str, ...]
    stream_offset: int
    stream_end: int
    eof: bool
    section_footers: bool | None
    ram_sections: int
    ram_records: int
    resent_pages: int
    vmdesc_offset: int | None
    vmdesc_devices: int | None
    below_4g: int | None  # bytes of pc.ram below 4 GiB, when mapped
    ram_blocks: tuple[RamBlockInfo, ...]
    sections: tuple[DeviceSection, ...]
    devices: SavedDevices = field(default_factory=SavedDevices)

    @property
    def vmdesc_present(self) -> bool:
        """Does the stream end with QEMU's JSON VM description?"""
        return self.vmdesc_offset is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stream_version": self.stream_version, "machine": self.machine, "page_size": self.page_size,
            "capabilities": list(self.capabilities), "stream_offset": self.stream_offset,
            "stream_end": self.stream_end, "eof": self.eof, "section_footers": self.section_footers,
            "ram_sections": self.ram_sections, "ram_records": self.ram_records,
            "resent_pages": self.resent_pages, "vmdesc_offset": self.vmdesc_offset,
            "vmdesc_devices": self.vmdesc_devices,
        }
        if self.below_4g is not None:
            out["below_4g"] = self.below_4g
        out |= {"machine_family": self.machine_family,
                "ram_blocks": [b.to_dict() for b in self.ram_blocks],
                "sections": [s.to_dict() for s in self.sections],
                "devices": self.devices.to_dict(),
                "saved_state": self.devices.inputs_dict()}
        return out


@dataclass(frozen=True)
class LibvirtHeader:
    """``virQEMUSaveHeader`` and the XML after it (libvirt src/qemu/qemu_saveimage.h)."""

    magic: str
    version: int
    byte_order: Literal["little", "big"]
    data_len: int
    was_running: bool
    compression: str  # raw, gzip, bzip2, xz, zstd (lzop and sparse are refused)
    domain_xml: str
    cookie_xml: str | None = None
    decompressed_to: str | None = None  # the temporary file holding the decompressed stream
    decompressed_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.decompressed_to is not None:
            out |= {"decompressed_to": self.decompressed_to, "decompressed_size": self.decompressed_size}
        out |= {"libvirt_magic": self.magic, "libvirt_version": self.version,
                "libvirt_byte_order": self.byte_order, "data_len": self.data_len,
                "was_running": self.was_running, "compression": self.compression,
                "domain_xml": self.domain_xml}
        if self.cookie_xml is not None:
            out["cookie_xml"] = self.cookie_xml
        return out


@dataclass(frozen=True)
class SavedState(ContainerHeader):
    """A saved VM: its migration stream's header and, for a libvirt save image, libvirt's."""

    migration: MigrationHeader
    libvirt: LibvirtHeader | None = None

    @property
    def devices(self) -> SavedDevices:
        return self.migration.devices

    def to_dict(self) -> dict[str, Any]:
        """The dump's ``facts`` (what ``vmci info`` shows)."""
        return self.migration.to_dict() | (self.libvirt.to_dict() if self.libvirt is not None else {})
