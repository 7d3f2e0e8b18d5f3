"""The magic bytes that identify each container: cheap to import (no construct), so detection
does not pay for the readers it will not use."""

ELF_MAGIC = b"\x7fELF"
KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
MDF_SIGNATURE = b"makedumpfile"  # NUL-padded to 16 bytes in the flattened header
QEVM_MAGIC = b"QEVM"
LIBVIRT_MAGICS = (b"LibvirtQemudSave", b"LibvirtQemudPart")


def is_kdump(head: bytes) -> bool:
    return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)


def is_flattened(head: bytes) -> bool:
    return head[:16] == MDF_SIGNATURE.ljust(16, b"\0")
