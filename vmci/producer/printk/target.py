"""Where the guest kernel keeps its log: the layout of its version, the addresses and the
VMCOREINFO lines that publish them (:func:`target_for`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vmci.layouts.printk import (
    LOCKLESS_KEYS,
    LOCKLESS_SYMBOLS,
    PLAIN_SYMBOLS,
    STRUCTURED_SYMBOLS,
    structured_keys,
)
from vmci.producer.linux import KernelLayout, KernelProfile


@dataclass(frozen=True)
class PrintkTarget:
    """The guest kernel as the log writer sees it."""

    variant: str
    """``lockless``, ``structured`` or ``plain``."""
    version: tuple[int, int]
    values: Mapping[str, int]
    """SIZE/OFFSET/LENGTH values by VMCOREINFO key, e.g. ``"OFFSET(prb_desc.state_var)"``."""
    symbols: Mapping[str, int]
    """Runtime addresses of the log's kernel variables."""
    image_paddr: Callable[[int], int]
    """Physical address of a kernel-image virtual address (where the variables live)."""
    direct_map: int
    """Virtual address of physical 0: allocated buffers are referenced through the direct map."""
    pointer_size: int = 8
    byteorder: str = "little"
    log_align: int = 4
    """``LOG_ALIGN`` (structured): 4 where unaligned access is cheap (x86), else 8."""

    def lookup(self, kind: str, name: str) -> int | None:
        return self.values.get(f"{kind}({name})")

    @property
    def latched_clear_seq(self) -> bool:
        return "SIZE(latched_seq)" in self.values

    @property
    def perfect_fit_wraps(self) -> bool:
        """Before "printk_ringbuffer: don't needlessly wrap data blocks around" (2025, about
        6.18) a block ending exactly at the end of the data array was wrapped to index 0."""
        return self.version < (6, 18)


def consistent_values(profile: KernelProfile) -> dict[str, int]:
    """``printk_ringbuffer`` sizes of a real x86_64 build of ``profile``'s era, to pass as
    ``KernelLayout.values`` (opt-in: the profiles' defaults put ``fail`` inside the text ring):
    ``prb_desc_ring`` grew ``last_finalized_id`` in 5.19 (40 -> 48 bytes)."""
    desc_ring = 48 if profile.since(5, 19) else 40
    return {"SIZE(prb_desc_ring)": desc_ring, "OFFSET(printk_ringbuffer.text_data_ring)": desc_ring,
            "OFFSET(printk_ringbuffer.fail)": desc_ring + 32, "SIZE(printk_ringbuffer)": desc_ring + 40}


def _variant(version: tuple[int, int]) -> str:
    if version >= (5, 10):
        return "lockless"
    return "structured" if version >= (3, 5) else "plain"


def target_for(layout: KernelLayout, *, direct_map: int | None = None) -> PrintkTarget:
    """The log target of a :class:`KernelLayout`: its profile's layout, its VMCOREINFO values
    (as :mod:`vmci.producer.linux` prints them), its KASLR'd symbols."""
    version = layout.profile.version
    variant = _variant(version)
    if variant == "lockless":
        keys = [k for k in LOCKLESS_KEYS if version >= (5, 13) or k[1].split(".")[0] != "latched_seq"]
        syms: tuple[str, ...] = LOCKLESS_SYMBOLS
    elif variant == "structured":
        struct = "printk_log" if version >= (3, 11) else "log"
        keys = list(structured_keys(struct, f"OFFSET({struct}.caller_id)" in layout.values))
        syms = tuple(s for s in STRUCTURED_SYMBOLS if s != "clear_idx" or version >= (4, 19))
    else:
        keys, syms = [], PLAIN_SYMBOLS
    values = {f"{kind}({name})": layout.value(f"{kind}({name})") for kind, name in keys}
    return PrintkTarget(variant, version, values, {s: layout.runtime(s) for s in syms},
                        layout.kernel_paddr, layout.direct_map if direct_map is None else direct_map)


def vmcoreinfo_lines(target: PrintkTarget) -> list[str]:
    """What ``log_buf_vmcoreinfo_setup()`` (``log_buf_kexec_setup()`` before 3.x) appends for
    ``target``, in the kernel's order and formats (``SYMBOL`` as bare hex, the rest decimal)."""
    out = [f"SYMBOL({name})={addr:x}\n" for name, addr in target.symbols.items()]
    out += [f"{key}={value:d}\n" for key, value in target.values.items()]
    return out
