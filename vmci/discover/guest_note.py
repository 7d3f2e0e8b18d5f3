"""The guest's VMCOREINFO note as the strategies that follow a pointer to it check it.

:func:`read_guest_note` does what QEMU's ``dump_init()`` (dump/dump.c) does with a note the
guest registered, and checks each step: size bounds (QEMU ignores notes over
:data:`MAX_GUEST_NOTE_SIZE`), RAM, the ``VMCOREINFO`` header, the descriptor within the size.
:func:`check_text` is the text validation every strategy shares (``KEY=value`` lines and the lint
codes); :func:`conclude` turns a strategy's one candidate into its finding.
"""

from __future__ import annotations

from vmci.core.evidence import Evidence
from vmci.core.memory import PhysicalMemory
from vmci.discover.finding import Candidate, Finding
from vmci.errors import VmciError
from vmci.kernel.vmcoreinfo import VMCOREINFO_NOTE_NAME, VMCOREINFO_NOTE_TYPE, VmcoreInfo
from vmci.layouts.note import NOTE_HEADER_SIZE, align4, note_header_struct
from vmci.machine.qemu_devices import MAX_GUEST_NOTE_SIZE

#: The code of the step that states a strategy's result (its last step).
RESULT = "discover.result"

_NAME = VMCOREINFO_NOTE_NAME + b"\0"


def note_size(descsz: int) -> int:
    """The size of a VMCOREINFO note with a ``descsz``-byte text: header, padded name, padded text."""
    return NOTE_HEADER_SIZE + align4(len(_NAME)) + align4(descsz)


def read_or_none(mem: PhysicalMemory, paddr: int, n: int) -> bytes | None:
    """``n`` bytes at ``paddr``, or None when the dump does not hold them all."""
    try:
        return mem.read(paddr, n)
    except VmciError:
        return None


def check_text(desc: bytes, ev: Evidence, paddr: int | None = None, *, prefix: str = "",
               empty: str = "the descriptor holds no KEY=value lines") -> VmcoreInfo | None:
    """Parse a note's descriptor as a VMCOREINFO text: it needs ``KEY=value`` lines; lint codes
    make the step a warning.  ``prefix`` starts the detail; ``empty`` is the failure's."""
    text = VmcoreInfo.parse(desc)
    keyed = sum(1 for ln in text.lines if ln.key)
    if not keyed:
        ev.fail("text", empty, paddr)
        return None
    detail = f"{prefix}{keyed} KEY=value lines, OSRELEASE={text.osrelease}"
    codes = sorted({w.code for w in text.warnings})
    if codes:
        ev.warn("text", detail + "; lint: " + ", ".join(codes), paddr)
    else:
        ev.ok("text", detail, paddr)
    return text


def read_guest_note(mem: PhysicalMemory, paddr: int, size: int, ev: Evidence, *,
                    byteorder: str = "little") -> tuple[VmcoreInfo, int] | None:
    """What QEMU's dump_init does with a registered note, checked: size bounds, RAM, the
    VMCOREINFO header, descsz within ``size``.  Returns ``(text, padded note size)``."""
    if size < NOTE_HEADER_SIZE:
        ev.fail("size bounds", f"size {size} is smaller than a note header ({NOTE_HEADER_SIZE}): "
                               "QEMU ignores the note", paddr)
        return None
    if size > MAX_GUEST_NOTE_SIZE:
        ev.fail("size bounds", f"size {size} exceeds QEMU's limit of {MAX_GUEST_NOTE_SIZE} (1 MiB): "
                               "QEMU ignores the note", paddr)
        return None
    ev.ok("size bounds", f"{NOTE_HEADER_SIZE} <= size {size} <= {MAX_GUEST_NOTE_SIZE}", paddr)
    if not mem.contains(paddr, NOTE_HEADER_SIZE):
        ev.fail("paddr in RAM", f"note address {paddr:#x} is outside the dump's RAM "
                                f"({_ranges(mem)})", paddr)
        return None
    if not mem.contains(paddr, size):
        ev.warn("paddr in RAM", f"the note starts in RAM but {paddr:#x}+{size} runs past it", paddr)
    else:
        ev.ok("paddr in RAM", f"{paddr:#x}..{paddr + size:#x} lies in the dump's RAM", paddr)
    head = read_or_none(mem, paddr, NOTE_HEADER_SIZE)
    if head is None:
        ev.fail("note readable", "the note header is RAM the dump does not hold (excluded page)", paddr)
        return None
    namesz, descsz, ntype = note_header_struct(byteorder).unpack(head)
    name_raw = read_or_none(mem, paddr + NOTE_HEADER_SIZE, min(namesz, 64)) if namesz else b""
    if namesz != len(_NAME) or name_raw != _NAME:
        ev.fail("note name", f"n_namesz {namesz}, name {name_raw!r}: want 11 and b'VMCOREINFO\\x00'", paddr)
        return None
    ev.ok("note name", "n_namesz 11, name VMCOREINFO\\0", paddr + NOTE_HEADER_SIZE)
    if ntype != VMCOREINFO_NOTE_TYPE:
        ev.fail("note type", f"n_type {ntype}: a VMCOREINFO note has type 0", paddr + 8)
        return None
    ev.ok("note type", "n_type 0", paddr + 8)
    total = note_size(descsz)
    desc_paddr = paddr + NOTE_HEADER_SIZE + align4(namesz)
    if total > size:
        ev.fail("note descsz", f"n_descsz {descsz} makes the note {total} bytes, more than the "
                               f"registered size {size}: truncated (QEMU drops it)", paddr + 4)
        return None
    desc = read_or_none(mem, desc_paddr, descsz)
    if desc is None:
        ev.fail("note descsz", f"the {descsz}-byte descriptor at {desc_paddr:#x} runs past the dump's "
                               "RAM: truncated", paddr + 4)
        return None
    ev.ok("note descsz", f"n_descsz {descsz}: note of {total} bytes fits the size {size}", paddr + 4)
    text = check_text(desc, ev, desc_paddr)
    return None if text is None else (text, total)


def _ranges(mem: PhysicalMemory) -> str:
    rs = list(mem.ranges)
    shown = ", ".join(str(r) for r in rs[:4])
    return shown + (f" and {len(rs) - 4} more" if len(rs) > 4 else "")


def conclude(finding: Finding, cand: Candidate) -> None:
    """A one-candidate strategy's end: the candidate is chosen when valid, else rejected with
    its last failure as the result."""
    if cand.valid:
        finding.candidates.append(cand)
        finding.chosen = cand
        finding.evidence.ok("result", f"reached the VMCOREINFO note at {cand.paddr:#x}", cand.paddr,
                            code=RESULT)
    else:
        finding.rejected.append(cand)
        last = cand.evidence.last_failure()
        finding.evidence.fail("result", f"no usable note: {last.action}: {last.detail}" if last
                              else "no usable note", code=RESULT)
