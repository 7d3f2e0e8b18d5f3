"""What to build: the :class:`Scenario` (Python fields and TOML keys alike), the dump formats the
generator writes, and the vocabulary of fault injections.

This module is configuration only; :mod:`vmci.producer.build` runs the actors and
:mod:`vmci.producer.scenario` writes the dump and its truth.  It imports nothing of the producer,
so the state, the actors and the faults can all refer to a :class:`Scenario`.

Scenario keys (a TOML file may put them under ``[scenario]``):

=================  ===========================================================================
``seed``           int, default 0
``arch``           ``"x86_64"`` (default) or ``"aarch64"`` (an arm64 guest on QEMU's ``virt``:
                   direct kernel boot, no firmware or ACPI, the upstream device or none)
``ram``            bytes, or a string such as ``"32M"``/``"16G"`` (default 256 MiB)
``machine``        ``"q35"`` (default) or ``"pc"``; ``"virt"`` for aarch64 (its default)
``firmware``       ``"seabios"`` (default) or ``"ovmf"``; ``"none"`` for aarch64 (its default)
``device``         ``"rfc"`` (default, the seed's device), ``"upstream"`` or ``"none"``
                   (aarch64: ``"upstream"``, its default, or ``"none"``)
``rfc_offset``     40 (default) or 36
``vmgenid``        bool; ``vmgenid_guid`` a UUID string (default: from the seed)
``kernel``         profile ``"4.9"``, ``"4.19"``, ``"5.10"``, ``"6.1"`` (default), ``"6.9"``, ``"6.12"``
``osrelease``      release string (default: the profile's)
``kaslr``          bool (default true); ``kaslr_offset``/``phys_base`` ints pin them
``la57``, ``pti``  5-level paging, page-table isolation (default false; aarch64: KPTI, with a
                   vCPU at EL0 holding ``tramp_pg_dir``)
``page_size``      aarch64: the granule, 4096 (default), 16384 or 65536
``va_bits``        aarch64: ``CONFIG_ARM64_VA_BITS``, 48 (default); 39 (4K), 47 (16K), 42 or 52 (64K)
``byteorder``      aarch64: ``"little"`` (default) or ``"big"`` (a big-endian guest)
``cpus``           vCPUs (default 2)
``panic``          the kernel panicked: CRASHTIME in the text (forced for ``kexec``); ``crashtime``
``log``            messages the guest kernel logs into its printk buffer (default 0: no log); with
                   ``panic``, followed by the panic of ``panic_cause`` (``"sysrq"`` default,
                   ``"null-deref"``, ``"oom"``, ``"hung-task"``, ``"soft-lockup"``);
                   ``log_faults`` damage the log (``wrap``, ``half-written``, ``stuck-writer``,
                   ``reused-descriptor``, ``corrupt-id``, ``corrupt-len``, ``truncated``)
``rsdp_revision``  0 (default, as QEMU builds) or 2; ``fadt_revision`` 1 (default) or 3
``vga_hole``       leave 0xA0000-0xBFFFF out of RAM (default false)
``image``          kernel image ``"full"`` (32 MiB, real link addresses), ``"compact"`` (8 MiB) or
                   ``"auto"`` (compact below 128 MiB of RAM)
``faults``         list of fault names (:data:`FAULT_SPECS`; implemented in :mod:`vmci.producer.faults`)
``phys_base_bug``  reproduce QEMU's hexadecimal phys_base parse in kdump headers (default true)
``qemu_version``   ``"7.2"`` (default: section headers first, ``e_ehsize`` 8) or e.g. ``"7.1"``
=================  ===========================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vmci.core.units import parse_size
from vmci.errors import UsageError
from vmci.machine.qemu_devices import RFC_OFFSETS
from vmci.producer import FORMATS

__all__ = ["ARCHES", "FAULT_SPECS", "FORMATS", "STAGES", "FaultSpec", "Scenario", "check_faults",
           "merge_flags"]

#: Causes of the panic the guest kernel logs (``panic_cause``; :func:`vmci.producer.printk.panic_log`).
PANIC_CAUSES = ("sysrq", "null-deref", "oom", "hung-task", "soft-lockup")

#: The actors' stages, in the order :func:`vmci.producer.build.build` runs them.
STAGES = ("machine", "qemu-device", "guest-kernel", "guest-driver", "after-boot")


@dataclass(frozen=True)
class FaultSpec:
    """A fault as a scenario names it: the stage (actor) that applies it and what it breaks."""

    name: str
    stage: str
    description: str


FAULT_SPECS: dict[str, FaultSpec] = {
    f.name: f
    for f in (
        FaultSpec("no-device", "machine", "no vmcoreinfo device at all"),
        FaultSpec("rfc-offset-36", "machine", "the later RFC layout: content at page + 36"),
        FaultSpec("nonzero-suppressor", "qemu-device", "non-zero bytes in the page's probe suppressor"),
        FaultSpec("suppressor-acpi-header", "qemu-device",
                  "suppressor bytes form an ACPI SDT header that passes OVMF's probe"),
        FaultSpec("wrong-note-name", "guest-kernel", "the kernel's note is not named VMCOREINFO"),
        FaultSpec("wrong-note-type", "guest-kernel", "the kernel's note has n_type 1"),
        FaultSpec("stale-note", "guest-kernel", "a second, stale note left by a kdump kernel"),
        FaultSpec("unknown-version", "guest-driver", "RFC version 1 / upstream guest_format 2"),
        FaultSpec("paddr-outside-ram", "guest-driver", "the registered note address is not RAM"),
        FaultSpec("size-oversize", "guest-driver", "registered size over 1 MiB"),
        FaultSpec("size-undersize", "guest-driver", "registered size under 12 bytes"),
        FaultSpec("truncated-note", "guest-driver", "registered size shorter than the note"),
        FaultSpec("bad-acpi-checksum", "after-boot", "the SSDT's checksum does not verify"),
        FaultSpec("missing-ssdt", "after-boot", "the SSDT is not listed (and not in RAM)"),
        FaultSpec("vmcoreinfo-lost", "after-boot", "the kernel's note and text pages zeroed"),
    )
}


ARCHES = ("x86_64", "aarch64")
#: the keys whose empty value means "the architecture's default"
_DEFAULTS = {"x86_64": {"machine": "q35", "firmware": "seabios", "device": "rfc"},
             "aarch64": {"machine": "virt", "firmware": "none", "device": "upstream"}}
#: the keys only an aarch64 scenario writes out
_AARCH64_KEYS = ("arch", "page_size", "va_bits", "byteorder")
#: faults of the RFC device and of ACPI tables (x86 only)
_X86_FAULTS = ("rfc-offset-36", "nonzero-suppressor", "suppressor-acpi-header", "bad-acpi-checksum",
               "missing-ssdt")


def check_faults(names: Sequence[str]) -> None:
    """A :class:`UsageError` naming the first unknown fault in ``names``."""
    unknown = [n for n in names if n not in FAULT_SPECS]
    if unknown:
        raise UsageError(f"unknown fault {unknown[0]!r}; known: {', '.join(FAULT_SPECS)}")


@dataclass(frozen=True)
class Scenario:
    """What to build; see the module docstring for every key."""

    seed: int = 0
    arch: str = "x86_64"
    ram: int = 256 << 20
    machine: str = ""  # "": the architecture's default (q35, virt)
    firmware: str = ""  # "": seabios on x86_64, none on aarch64
    device: str = ""  # "": rfc on x86_64, upstream on aarch64
    rfc_offset: int = 40
    vmgenid: bool = False
    vmgenid_guid: str | None = None
    kernel: str = "6.1"
    osrelease: str = ""
    kaslr: bool = True
    kaslr_offset: int | None = None
    phys_base: int | None = None
    la57: bool = False
    pti: bool = False
    cpus: int = 2
    panic: bool = False
    crashtime: int | None = None
    log: int = 0
    panic_cause: str = "sysrq"
    log_faults: tuple[str, ...] = ()
    rsdp_revision: int = 0
    fadt_revision: int = 1
    vga_hole: bool = False
    image: str = "auto"
    faults: tuple[str, ...] = ()
    phys_base_bug: bool = True
    qemu_version: str = "7.2"
    mem_map: bool = False
    """Opt-in: the guest kernel's memory map (``mem_section`` and a ``struct page`` per page frame,
    the rest of RAM cut into free, cache, user, slab, hugetlb, poisoned and offline pages), as
    page filtering reads it (:mod:`vmci.producer.mm`)."""
    page_size: int = 4096
    va_bits: int = 48
    byteorder: str = "little"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ram", parse_size(self.ram))
        object.__setattr__(self, "faults", tuple(self.faults))
        object.__setattr__(self, "log_faults", tuple(self.log_faults))
        if self.log < 0:
            raise UsageError(f"log is a number of messages, not {self.log}")
        if self.panic_cause not in PANIC_CAUSES:
            raise UsageError(f"panic_cause is one of {', '.join(PANIC_CAUSES)}, not {self.panic_cause!r}")
        check_faults(self.faults)
        if self.arch not in ARCHES:
            raise UsageError(f"arch is one of {', '.join(ARCHES)}, not {self.arch!r}")
        for key, default in _DEFAULTS[self.arch].items():
            if not getattr(self, key):
                object.__setattr__(self, key, default)
        if self.arch == "aarch64":
            self._check_aarch64()
        elif (self.page_size, self.va_bits, self.byteorder) != (4096, 48, "little"):
            raise UsageError("page_size, va_bits and byteorder are aarch64 keys (x86_64: 4096, 48, little)")
        x86 = self.arch == "x86_64"
        choices = {"machine": ("q35", "pc") if x86 else ("virt",),
                   "firmware": ("seabios", "ovmf") if x86 else ("none",),
                   "device": ("rfc", "upstream", "none") if x86 else ("upstream", "none"),
                   "image": ("auto", "full", "compact")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UsageError(f"{key} is one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        if self.rfc_offset not in RFC_OFFSETS:
            raise UsageError(f"rfc_offset is 40 or 36, not {self.rfc_offset}")
        if not 1 <= self.cpus <= 64:
            raise UsageError(f"cpus must be 1..64, not {self.cpus}")
        version = self.qemu_version
        if not isinstance(version, str) or not all(part.isdigit() for part in version.split(".")):
            raise UsageError(f"qemu_version is a version such as '7.2', not {self.qemu_version!r}")

    def _check_aarch64(self) -> None:
        from vmci.arch.aarch64.consts import VA_BITS_CHOICES

        shift = self.page_size.bit_length() - 1
        if self.page_size not in (4096, 16384, 65536):
            raise UsageError(f"page_size is 4096, 16384 or 65536, not {self.page_size}")
        allowed = [v for v in VA_BITS_CHOICES[shift] if v != 52 or shift == 16]  # LPA2 (6.9+) not built
        if self.va_bits not in allowed:
            raise UsageError(f"va_bits with {self.page_size}-byte pages is one of {allowed}, "
                             f"not {self.va_bits}")
        if self.byteorder not in ("little", "big"):
            raise UsageError(f"byteorder is little or big, not {self.byteorder!r}")
        if self.la57 or self.vmgenid or self.vga_hole:
            raise UsageError("la57, vmgenid and vga_hole are x86 keys (no vmgenid on Arm virt)")
        if self.kernel in ("4.9", "4.19"):
            raise UsageError("aarch64 guests use a kernel profile of 5.10 or later (the flipped VA layout)")
        bad = [f for f in self.faults if f in _X86_FAULTS]
        if bad:
            raise UsageError(f"fault {bad[0]!r} needs the RFC device or ACPI, which an aarch64 virt "
                             "guest lacks")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        data = dict(data.get("scenario", data))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown scenario key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            try:
                import tomli as tomllib
            except ModuleNotFoundError:
                raise UsageError("reading TOML needs Python 3.11 or the tomli package") from None
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise UsageError(f"cannot read scenario {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"scenario {path} is not valid TOML: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["faults"] = list(self.faults)
        out["log_faults"] = list(self.log_faults)
        if not self.log:  # no kernel log written: the keys of scenarios before the log existed
            for key in ("log", "panic_cause", "log_faults"):
                del out[key]
        if not self.mem_map:  # opt-in keys appear only when set: earlier truths stay byte-identical
            del out["mem_map"]
        if self.arch == "x86_64":  # the aarch64 keys: x86 scenarios and truths stay as they were
            for key in _AARCH64_KEYS:
                del out[key]
        return out

    @property
    def qemu_version_info(self) -> tuple[int, int]:
        """``qemu_version`` as (major, minor); a missing minor is 0."""
        major, _, rest = self.qemu_version.partition(".")
        return int(major), int(rest.partition(".")[0] or 0)

    @property
    def image_kind(self) -> str:
        if self.image != "auto":
            return self.image
        return "compact" if self.ram < (128 << 20) else "full"


def merge_flags(base: Scenario | None, flags: Mapping[str, Any], faults: Sequence[str] = ()) -> Scenario:
    """Command-line flags over a scenario file: each flag that is not ``None`` replaces its key, and
    ``faults`` are added after the file's own (``vmci generate --scenario F --seed 9 --fault X``)."""
    data = base.to_dict() if base is not None else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    if faults:
        data["faults"] = list(data.get("faults", [])) + list(faults)
    return Scenario.from_dict(data)
