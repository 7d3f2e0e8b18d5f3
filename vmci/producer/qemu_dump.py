"""QEMU's ``dump-guest-memory`` on top of the format writers, and kexec's ``/proc/vmcore``.

What QEMU does (``dump/dump.c``: ``write_elf64_notes``, ``get_note_sizes``/``dump_init``'s
guest-note checks, ``create_kdump_vmcore``): per vCPU one ``CORE``/NT_PRSTATUS
note, then per vCPU one ``QEMU`` note (``QEMUCPUState``), then the guest's note, appended only
when the vmcoreinfo device holds data.  Only the *first* note at the registered address is
copied (the kernel's trailing empty note is dropped), after checks on the registered size and
the note header.  The RFC device's address comes from ``vmcoreinfo_get()`` (version, paddr and
size read from guest RAM at the saved blob), the upstream one's from its 16-byte record.

kdump files get QEMU's header choices: version 6, only ``utsname.machine``, ``dump_level`` 1,
identical bitmaps, no timestamp, and ``phys_base`` taken from ``NUMBER(phys_base)=`` parsed as
*hexadecimal* (``qemu_strtou64(..., 16, ...)``) although Linux prints it in decimal: the QEMU bug
is reproduced unless asked not to.  Unassigned guest memory reads as zeros here, as a read of an
unassigned address does in QEMU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from vmci.arch.x86_64.cpu import prstatus_desc, qemu_cpu_desc
from vmci.arch.x86_64.paging import walk
from vmci.core.dump import CpuState
from vmci.core.headers import KdumpHeader, Utsname
from vmci.core.memory import PhysicalMemory, RestrictedMemory
from vmci.errors import FormatError, NotFoundError, UsageError
from vmci.formats.elf.writer import write_elf
from vmci.formats.kdump.writer import write_kdump
from vmci.formats.notes import encode_notes
from vmci.layouts.elf import EM_AARCH64, EM_X86_64
from vmci.layouts.fw_cfg import VMCOREINFO_FORMAT_ELF
from vmci.layouts.note import NOTE_HEADER_SIZE, align4, note_header_struct
from vmci.machine.qemu_devices import MAX_GUEST_NOTE_SIZE
from vmci.producer.devices import RfcVmcoreinfoDevice, UpstreamVmcoreinfoDevice

ARM64_DUMP_PAGE = 1 << 16  # target/arm/arch_dump.c cpu_get_dump_info: the kdump block size
QEMU_CPU_SIZE = 440  # QEMUCPUState with kernel_gs_base (QEMU 3.0 .. 9.x)
_NHDR = note_header_struct("little")  # QEMU reads the guest note in the target's order (x86: LE)
_U64 = (1 << 64) - 1


@dataclass
class GuestNote:
    """What ``dump_init`` made of the vmcoreinfo device: the bytes it appends, or why none."""

    source: str  # "rfc", "upstream" or "none"
    data: bytes | None = None
    paddr: int | None = None
    size: int | None = None  # the size the guest registered
    name: str | None = None
    warning: str | None = None  # QEMU's warn_report when it appends nothing

    @property
    def appended(self) -> bool:
        return self.data is not None

    @property
    def is_vmcoreinfo(self) -> bool:
        """``note_name_equal(..., "VMCOREINFO")``: namesz 11 and that name."""
        if self.data is None:
            return False
        namesz = _NHDR.unpack_from(self.data)[0]
        return namesz == 11 and self.data[NOTE_HEADER_SIZE : NOTE_HEADER_SIZE + 11] == b"VMCOREINFO\0"

    def desc(self) -> bytes:
        if self.data is None:
            return b""
        namesz, descsz, _ = _NHDR.unpack_from(self.data)
        start = NOTE_HEADER_SIZE + align4(namesz)
        return self.data[start : start + descsz]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = None if self.data is None else len(self.data)
        d["appended"] = self.appended
        return d


def guest_note(mem: PhysicalMemory, device: Any) -> GuestNote:
    """The guest note QEMU would append for ``device`` (None, RFC or upstream vmcoreinfo)."""
    if device is None:
        return GuestNote("none", warning="no vmcoreinfo device")
    if isinstance(device, RfcVmcoreinfoDevice):
        source = "rfc"
        try:
            paddr, size = device.get(mem)  # type: ignore[arg-type]
        except (NotFoundError, FormatError) as e:
            return GuestNote(source, warning=f"vmcoreinfo_get: {e}")
        fmt = VMCOREINFO_FORMAT_ELF  # the RFC content has no format field
    elif isinstance(device, UpstreamVmcoreinfoDevice):
        source = "upstream"
        rec = device.record()
        paddr, size, fmt = rec["paddr"], rec["size"], rec["guest_format"]
        if not device.has_vmcoreinfo:
            return GuestNote(source, paddr=paddr, size=size, warning="guest note is not present")
    else:
        raise UsageError(f"not a vmcoreinfo device: {type(device).__name__}")
    if size < NOTE_HEADER_SIZE or size > MAX_GUEST_NOTE_SIZE:
        return GuestNote(source, paddr=paddr, size=size, warning=f"guest note size is invalid: {size}")
    if fmt != VMCOREINFO_FORMAT_ELF:
        return GuestNote(source, paddr=paddr, size=size, warning=f"guest note format is unsupported: {fmt}")
    raw = mem.read(paddr, size, zero_fill=True) if paddr + size <= 1 << 64 else bytes(size)
    namesz, descsz, _ = _NHDR.unpack_from(raw)
    total = NOTE_HEADER_SIZE + align4(namesz) + align4(descsz)
    if namesz > MAX_GUEST_NOTE_SIZE or descsz > MAX_GUEST_NOTE_SIZE or total > size:
        return GuestNote(source, paddr=paddr, size=size, warning="Invalid guest note header")
    name = raw[NOTE_HEADER_SIZE : NOTE_HEADER_SIZE + namesz].split(b"\0", 1)[0].decode("latin-1")
    return GuestNote(source, bytes(raw[:total]), paddr, size, name)


# -- phys_base, as QEMU reads it ------------------------------------------------------------------

class StrtoxError(ValueError):
    """``qemu_strtou64`` failed: ``errno`` is ``"EINVAL"`` or ``"ERANGE"``."""

    def __init__(self, errno: str, text: str) -> None:
        super().__init__(f"{errno}: {text!r}")
        self.errno = errno


def qemu_strtou64(text: str, base: int = 16) -> int:
    """``qemu_strtou64(text, NULL, base, &v)``: strtoull semantics (leading blanks, one sign,
    ``0x`` for base 16, the digits converted *without* the sign, checked for overflow, then
    negated modulo 2**64), and the whole string must be consumed."""
    if not 2 <= base <= 36:
        raise UsageError(f"base {base} is not supported")
    i, n = 0, len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    neg = False
    if i < n and text[i] in "+-":
        neg = text[i] == "-"
        i += 1

    def digit(c: str) -> bool:
        return c.isascii() and c.isalnum() and int(c, 36) < base

    if base == 16 and text[i : i + 2] in ("0x", "0X") and i + 2 < n and digit(text[i + 2]):
        i += 2
    start = i
    while i < n and digit(text[i]):
        i += 1
    if i == start:
        raise StrtoxError("EINVAL", text)  # no conversion
    if i != n:
        raise StrtoxError("EINVAL", text)  # not fully consumed
    value = int(text[start:i], base)
    if value > _U64:
        raise StrtoxError("ERANGE", text)
    return (-value) & _U64 if neg else value


def qemu_phys_base(note: GuestNote, *, bug: bool = True, machine: str = "x86_64",
                   default: int = 0) -> tuple[int, str]:
    """(``dump_info.phys_base``, how it was obtained) for the kdump sub-header.

    QEMU scans the VMCOREINFO text for the first ``NUMBER(phys_base)=`` line (x86_64;
    ``NUMBER(PHYS_OFFSET)=`` for aarch64, which the kernel prints in hex, so base 16 is right
    there) and parses it base 16; with ``bug=False`` it is parsed as the kernel wrote it (signed
    decimal), as a fixed QEMU would.  Anything else leaves ``default``: 0 on x86, the lowest RAM
    block on Arm (``cpu_get_dump_info``'s guess).
    """
    stays = f"phys_base stays {default:#x}" if default else "phys_base stays 0"
    if not note.is_vmcoreinfo:
        return default, f"no VMCOREINFO note: {stays}"
    prefix = "NUMBER(phys_base)=" if machine == "x86_64" else "NUMBER(PHYS_OFFSET)="
    text = note.desc().split(b"\0", 1)[0].decode("latin-1")
    for line in text.split("\n"):
        if not line.startswith(prefix):
            continue
        value = line[len(prefix):]
        if not bug and machine == "x86_64":
            try:
                return int(value, 10) & _U64, f"{prefix}{value} parsed as decimal"
            except ValueError:
                return 0, f"{prefix}{value} is not decimal: phys_base stays 0"
        try:
            return qemu_strtou64(value, 16), f"{prefix}{value} parsed as hexadecimal (QEMU's bug)"
        except StrtoxError as e:
            return default, f"Failed to read {prefix} ({e.errno}): {stays}"
    return default, f"no {prefix} line: {stays}"


# -- notes -----------------------------------------------------------------------------------------

def qemu_notes(cpus: Sequence[CpuState], note: GuestNote | None = None, *,
               cpu_state_size: int = QEMU_CPU_SIZE, arch: str = "x86_64", byteorder: str = "little") -> bytes:
    """The PT_NOTE content: all CORE notes, all QEMU notes, then the guest note (x86_64); for
    aarch64 ``CORE`` NT_PRSTATUS and NT_PRFPREG per vCPU (no ``QEMU`` note), in ``byteorder``."""
    if arch == "aarch64":
        from vmci.arch.aarch64.cpu import qemu_cpu_notes

        blob = encode_notes(qemu_cpu_notes(cpus, order=byteorder), byteorder)
        return blob + (note.data if note is not None and note.data else b"")
    core = [("CORE", 1, prstatus_desc(c, "x86_64")) for c in cpus]
    qemu = [("QEMU", 0, qemu_cpu_desc(c, "x86_64", cpu_state_size)) for c in cpus]
    return encode_notes(core + qemu) + (note.data if note is not None and note.data else b"")


def kexec_notes(cpus: Sequence[CpuState], vmcoreinfo_note: bytes, *, arch: str = "x86_64",
                byteorder: str = "little") -> bytes:
    """``/proc/vmcore``'s merged PT_NOTE: the crash_save_cpu CORE notes, then VMCOREINFO."""
    if arch == "aarch64":
        from vmci.arch.aarch64.cpu import prstatus_desc as arm64_prstatus

        core = [("CORE", 1, arm64_prstatus(c, order=byteorder)) for c in cpus]
        return encode_notes(core, byteorder) + vmcoreinfo_note
    return encode_notes([("CORE", 1, prstatus_desc(c, "x86_64")) for c in cpus]) + vmcoreinfo_note


# -- paging mappings -------------------------------------------------------------------------------

def paging_mappings(mem: PhysicalMemory, cpus: Sequence[CpuState]) -> list[tuple[int, int, int]]:
    """``qemu_get_guest_memory_mapping``: the leaves of every paging vCPU's tables whose start is
    dumped memory, merged when contiguous in both address spaces, sorted by physical address.
    (vaddr, paddr, size) like :func:`write_elf` wants.  Identical roots are walked once."""
    roots: dict[tuple[int, bool], None] = {}
    for c in cpus:
        if c.paging and c.cr3 is not None:
            roots[(c.cr3, c.la57)] = None
    if not roots:
        return [(r.start, r.start, r.size) for r in mem.ranges]
    leaves: list[tuple[int, int, int]] = []
    for cr3, la57 in roots:
        for m in walk(mem, cr3, la57=la57):
            if mem.contains(m.pa):
                leaves.append((m.pa, m.va, m.size))
    leaves.sort()
    merged: list[list[int]] = []
    for pa, va, size in leaves:
        if merged and merged[-1][0] + merged[-1][2] == pa and merged[-1][1] + merged[-1][2] == va:
            merged[-1][2] += size
        else:
            merged.append([pa, va, size])
    return [(va, pa, size) for pa, va, size in merged]


# -- writers ---------------------------------------------------------------------------------------

def write_qemu_elf(out: BinaryIO, mem: PhysicalMemory, notes: bytes, *,
                   mappings: list[tuple[int, int, int]] | None = None,
                   qemu_version: tuple[int, int] = (7, 2), arch: str = "x86_64",
                   byteorder: str = "little") -> dict[str, Any]:
    """An ELF dump as QEMU writes it (7.2+: section headers first and ``e_ehsize`` 8); an aarch64
    one is ``EM_AARCH64`` in the guest's byte order (``SCTLR_EL1.EE``)."""
    new = qemu_version >= (7, 2)
    machine = EM_AARCH64 if arch == "aarch64" else EM_X86_64
    return write_elf(out, mem, notes, machine=machine, style="qemu", section_headers_first=new,
                     ehsize_quirk=new, mappings=mappings, little=byteorder == "little")


def vmcoreinfo_span(notes: bytes, note: GuestNote) -> tuple[int, int] | None:
    """QEMU's ``offset_vmcoreinfo`` (relative to the notes) and ``size_vmcoreinfo``: set only
    for a guest note named VMCOREINFO, which is always the last note."""
    if not note.is_vmcoreinfo or note.data is None:
        return None
    namesz, descsz, _ = _NHDR.unpack_from(note.data)
    return len(notes) - len(note.data) + NOTE_HEADER_SIZE + align4(namesz), descsz


def write_qemu_kdump(out: BinaryIO, mem: PhysicalMemory, notes: bytes, note: GuestNote, *,
                     nr_cpus: int, compression: str = "zlib", flattened: bool = True,
                     phys_base_bug: bool = True, arch: str = "x86_64",
                     byteorder: str = "little") -> dict[str, Any]:
    """A kdump-compressed dump as QEMU writes it (``kdump-*`` flattened, ``kdump-raw-*`` not).

    For aarch64: ``utsname.machine`` ``Unknown`` (``ELF_MACHINE_UNAME`` is defined for x86 and
    s390x only), 64 KiB blocks whatever the guest's page size (``cpu_get_dump_info``: "aarch64
    max pagesize"), ``phys_base`` from ``NUMBER(PHYS_OFFSET)`` (else the lowest RAM block), the
    header in the guest's byte order."""
    if arch == "aarch64":
        default = mem.ranges[0].start if mem.ranges else 0
        phys_base, why = qemu_phys_base(note, machine="aarch64", default=default)
        view = RestrictedMemory(mem, mem.ranges)
        view.page_size = ARM64_DUMP_PAGE
        header = KdumpHeader(header_version=6, utsname=Utsname(machine="Unknown"), phys_base=phys_base,
                             dump_level=1, nr_cpus=nr_cpus, tv_sec=0, tv_usec=0, compression=compression,
                             byte_order=byteorder)
        mem = view
    else:
        phys_base, why = qemu_phys_base(note, bug=phys_base_bug)
        header = KdumpHeader(header_version=6, utsname=Utsname(machine="x86_64"), phys_base=phys_base,
                             dump_level=1, nr_cpus=nr_cpus, tv_sec=0, tv_usec=0, compression=compression)
    facts = write_kdump(out, mem, notes, header, flattened=flattened,
                        vmcoreinfo_span=vmcoreinfo_span(notes, note))
    facts["phys_base"] = phys_base
    facts["phys_base_source"] = why
    return facts


def write_kexec_vmcore(out: BinaryIO, mem: PhysicalMemory, notes: bytes, *, direct_map: int,
                       kernel_load: tuple[int, int, int] | None = None, arch: str = "x86_64",
                       byteorder: str = "little") -> dict[str, Any]:
    """``/proc/vmcore`` as a kdump kernel exports it: PT_NOTE, the kernel-text PT_LOAD kexec-tools
    adds, then System RAM at its direct-map (arm64: linear-map) addresses."""
    return write_elf(out, mem, notes, machine=EM_AARCH64 if arch == "aarch64" else EM_X86_64, style="kexec",
                     direct_map=direct_map, extra_loads=[kernel_load] if kernel_load else [],
                     little=byteorder == "little")
