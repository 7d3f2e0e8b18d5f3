"""QEMU's fw_cfg file store as the guest sees it: named files with selectors sorted by name
from 0x20, the directory at 0x19, and the DMA interface (the only way to write a file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmci.core.memory import SparseMemory
from vmci.errors import NotFoundError, UsageError
from vmci.layouts.fw_cfg import (
    DMA_CTL_ERROR,
    DMA_CTL_READ,
    DMA_CTL_SELECT,
    DMA_CTL_SKIP,
    DMA_CTL_WRITE,
    FW_CFG_FILE_DIR,
    FW_CFG_FILE_FIRST,
    FW_CFG_MAX_FILE_PATH,
    FwCfgDirectory,
    FwCfgDmaAccess,
)

WriteCallback = Callable[[int, int], None]  # (offset, length) after a guest write


@dataclass
class FwCfgFile:
    """One fw_cfg file: QEMU owns ``data``; the guest may write it only if ``writable``."""

    name: str
    data: bytearray
    writable: bool = False
    on_write: WriteCallback | None = None


class FwCfg:
    """The fw_cfg device's file store."""

    def __init__(self) -> None:
        self._files: dict[str, FwCfgFile] = {}
        self._select = FW_CFG_FILE_DIR
        self._offset = 0

    # -- QEMU side ---------------------------------------------------------------------------

    def add_file(
        self, name: str, data: bytes | bytearray, *, writable: bool = False,
        on_write: WriteCallback | None = None,
    ) -> FwCfgFile:
        """Register a file; ``data`` is shared, not copied, when it is a bytearray (like QEMU)."""
        if name in self._files:
            raise UsageError(f"fw_cfg file {name!r} already exists")
        if not name or len(name.encode("latin-1")) >= FW_CFG_MAX_FILE_PATH:
            raise UsageError(f"fw_cfg file name {name!r} is empty or too long")
        buf = data if isinstance(data, bytearray) else bytearray(data)
        entry = self._files[name] = FwCfgFile(name, buf, writable, on_write)
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def names(self) -> list[str]:
        return sorted(self._files)

    def file(self, name: str) -> FwCfgFile:
        try:
            return self._files[name]
        except KeyError:
            raise NotFoundError(f"no fw_cfg file {name!r}") from None

    def select_of(self, name: str) -> int:
        """Selector key of ``name``: files are numbered by sorted name from 0x20."""
        self.file(name)
        return FW_CFG_FILE_FIRST + self.names().index(name)

    def by_select(self, key: int) -> FwCfgFile | None:
        names = self.names()
        i = key - FW_CFG_FILE_FIRST
        return self._files[names[i]] if 0 <= i < len(names) else None

    def directory(self) -> bytes:
        """The blob at selector 0x19 (big-endian count, then 64-byte entries)."""
        files = [
            {"size": len(self._files[n].data), "select": FW_CFG_FILE_FIRST + i, "reserved": 0, "name": n}
            for i, n in enumerate(self.names())
        ]
        return FwCfgDirectory.build({"count": len(files), "files": files})

    def item(self, key: int) -> bytes:
        """Content of a selector as the guest reads it (directory or file; unknown -> empty)."""
        if key == FW_CFG_FILE_DIR:
            return self.directory()
        f = self.by_select(key)
        return bytes(f.data) if f else b""

    # -- guest side ----------------------------------------------------------------------------

    def write(self, name: str, offset: int, data: bytes) -> None:
        """A guest write into a file, with QEMU's checks: writable and inside the file."""
        f = self.file(name)
        if not f.writable:
            raise UsageError(f"fw_cfg file {name!r} is read-only for the guest")
        if offset < 0 or offset + len(data) > len(f.data):
            raise UsageError(f"write of {len(data)} bytes at {offset} is outside fw_cfg file {name!r}")
        f.data[offset : offset + len(data)] = data
        if f.on_write:
            f.on_write(offset, len(data))

    def dma(self, mem: SparseMemory, desc_addr: int) -> int:
        """Execute the DMA descriptor at ``desc_addr`` in guest RAM, like a write to port 0x518.

        Returns the control word written back: 0 on success, ``DMA_CTL_ERROR`` on failure.
        """
        desc = FwCfgDmaAccess.parse(mem.read(desc_addr, FwCfgDmaAccess.sizeof()))
        ctl, length, addr = desc.control, desc.length, desc.address
        if ctl & DMA_CTL_SELECT:
            self._select, self._offset = ctl >> 16, 0
        status = 0
        if ctl & DMA_CTL_READ:
            content = self.item(self._select)
            chunk = content[self._offset : self._offset + length]
            mem.write(addr, chunk + bytes(length - len(chunk)))
            self._offset += length
        elif ctl & DMA_CTL_WRITE:
            f = self.by_select(self._select)
            try:
                if f is None:
                    raise UsageError(f"selector {self._select:#x} is not a file")
                self.write(f.name, self._offset, mem.read(addr, length))
                self._offset += length
            except UsageError:
                status = DMA_CTL_ERROR
        elif ctl & DMA_CTL_SKIP:
            self._offset += length
        mem.write(desc_addr, status.to_bytes(4, "big"))
        return status


def dma_write_file(
    fw_cfg: FwCfg, mem: SparseMemory, scratch: int, name: str, offset: int, data: bytes
) -> None:
    """Write ``data`` into fw_cfg file ``name`` the way firmware and Linux do: descriptors and
    data placed in guest RAM at ``scratch`` (needs 32 + len(data) bytes), select+skip, write.
    """
    key = fw_cfg.select_of(name)
    data_addr = scratch + 2 * FwCfgDmaAccess.sizeof()
    mem.write(data_addr, data)
    steps = []
    if offset:
        steps.append({"control": (key << 16) | DMA_CTL_SELECT | DMA_CTL_SKIP, "length": offset, "address": 0})
        steps.append({"control": DMA_CTL_WRITE, "length": len(data), "address": data_addr})
    else:
        steps.append({"control": (key << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE, "length": len(data),
                      "address": data_addr})
    for desc in steps:
        mem.write(scratch, FwCfgDmaAccess.build(desc))
        if fw_cfg.dma(mem, scratch):
            raise UsageError(f"fw_cfg DMA write to {name!r} at {offset} failed (control error bit set)")
