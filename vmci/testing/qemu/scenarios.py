"""The scenarios (x86_64 and arm64) and the session cache of their dumps: :func:`real_dumps`,
:func:`real_dumps_aarch64`, :class:`RealGuest`."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vmci.testing.qemu.files import (
    AARCH64_CPU,
    HARNESS_VERSION,
    QEMU,
    QEMU_AARCH64,
    KernelFiles,
    QemuError,
    arm64_busybox,
    find_arm64_kernel,
    find_kernel,
    missing_aarch64_requirements,
    missing_requirements,
)
from vmci.testing.qemu.guest import Guest, GuestFacts
from vmci.testing.qemu.initramfs import build_initramfs, build_kdump_initramfs

# -- scenarios and the session cache -----------------------------------------------------------


#: Lines the panic scenarios write: about 2.5 times the 128 KiB text ring of Debian's kernel
#: (CONFIG_LOG_BUF_SHIFT=17), so the ring wraps more than once.
KMSG_LINES = 5000


@dataclass(frozen=True)
class Scenario:
    """One guest configuration of :func:`real_dumps`."""

    name: str
    vmcoreinfo: bool
    vmgenid_guid: str | None
    firmware: str = "seabios"
    kaslr: bool = True
    smp: int = 2
    memory: str = "256M"
    machine: str = "q35"
    kmsg_lines: int = 0  #: > 0: write this many known lines to /dev/kmsg, then panic
    kdump: bool = False  #: load a kdump capture kernel first; dump while it runs


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("with_device", True, "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"),
        Scenario("without_device", False, None),
        Scenario("nokaslr", True, None, kaslr=False),
        Scenario("ovmf", True, "8f2a5c1e-6b7d-4e3f-9a10-2b3c4d5e6f70", firmware="ovmf"),
        Scenario("panic", True, None, kmsg_lines=KMSG_LINES),
        Scenario("panic_without_device", False, None, kmsg_lines=KMSG_LINES),
        Scenario("kdump_capture", True, None, memory="512M", kmsg_lines=KMSG_LINES, kdump=True),
    )
}

# name in the returned dict -> (file name, dump format, paging)
DUMPS = {
    "elf": ("dump.elf", "elf", False),
    "elf_paging": ("dump-paging.elf", "elf", True),
    "kdump_zlib": ("dump.kdump-zlib", "kdump-zlib", False),
}


@dataclass(frozen=True)
class Aarch64Scenario:
    """One arm64 guest configuration: ``qemu-system-aarch64 -machine virt -cpu cortex-a57``, Debian's
    arm64 kernel booted directly (``firmware="none"``: a device tree, no ACPI) or through edk2
    (``"uefi"``: ``-bios QEMU_EFI.fd``, the kernel from fw_cfg, ACPI tables installed by the
    firmware).  Its own type, so that the x86 scenarios' cache keys stay as they were."""

    name: str
    vmcoreinfo: bool
    kaslr: bool = True
    firmware: str = "none"
    smp: int = 2
    memory: str = "512M"
    machine: str = "virt"
    cpu: str = AARCH64_CPU
    kmsg_lines: int = 0  #: > 0: write this many known lines to /dev/kmsg, then panic


AARCH64_SCENARIOS: dict[str, Aarch64Scenario] = {
    s.name: s
    for s in (
        Aarch64Scenario("arm64_with_device", True),
        Aarch64Scenario("arm64_without_device", False),
        Aarch64Scenario("arm64_nokaslr", True, kaslr=False),
        Aarch64Scenario("arm64_panic", True, kmsg_lines=KMSG_LINES),
        Aarch64Scenario("arm64_uefi", True, firmware="uefi"),
    )
}

#: the arm64 artefacts (QEMU's arm target has no paging hook: a paging ELF equals the plain one)
AARCH64_DUMPS = {
    "elf": ("dump.elf", "elf", False),
    "kdump_zlib": ("dump.kdump-zlib", "kdump-zlib", False),
}


def qemu_version(binary: str = QEMU) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def real_dumps(
    directory: Path,
    scenario: str | Scenario | Aarch64Scenario,
    *,
    kernel: KernelFiles | None = None,
    initramfs_dir: Path | None = None,
) -> dict[str, Path]:
    """Boot ``scenario`` once and write its artefacts to ``directory``; reuse them if present.

    Returns paths by name: ``elf``, ``elf_paging``, ``kdump_zlib`` (flattened), ``migration``,
    ``note`` (``pmemsave`` of the note buffer at the ``/sys/kernel/vmcoreinfo`` address),
    ``serial_log`` and ``facts`` (JSON, see :func:`load_facts`).  All dumps come from one
    stopped moment; the migration stream is taken last, from the same stopped guest.
    """
    if isinstance(scenario, Aarch64Scenario) or scenario in AARCH64_SCENARIOS:
        return real_dumps_aarch64(directory, scenario, kernel=kernel, initramfs_dir=initramfs_dir)
    sc = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    kernel = kernel or find_kernel()
    if kernel is None:
        raise QemuError("no usable kernel: " + "; ".join(missing_requirements()))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / fname for name, (fname, _, _) in DUMPS.items()}
    paths |= {
        "migration": directory / "migration.bin",
        "note": directory / "vmcoreinfo-note.bin",
        "serial_log": directory / "serial.log",
        "facts": directory / "facts.json",
    }
    cache_key = {
        "harness": HARNESS_VERSION,
        "scenario": asdict(sc),
        "kernel": kernel.version,
        "qemu": qemu_version(),
    }
    with contextlib.suppress(OSError, ValueError, KeyError):
        if load_facts(paths)["cache_key"] == cache_key and all(p.is_file() for p in paths.values()):
            return paths
    paths["facts"].unlink(missing_ok=True)  # written last: its presence means "complete"

    initramfs = (build_kdump_initramfs if sc.kdump else build_initramfs)(kernel, initramfs_dir or directory)
    guest = Guest(
        kernel,
        initramfs=initramfs,
        workdir=directory,
        vmcoreinfo=sc.vmcoreinfo,
        vmgenid_guid=sc.vmgenid_guid,
        firmware=sc.firmware,
        kaslr=sc.kaslr,
        smp=sc.smp,
        memory=sc.memory,
        machine=sc.machine,
        kmsg_lines=sc.kmsg_lines,
        kdump=sc.kdump,
    )
    with guest:
        run = _capture(guest, paths, DUMPS, vmgenid=bool(sc.vmgenid_guid))
    facts = run.facts
    record = _record(cache_key, sc, kernel, run, guest, kmsg=bool(sc.kmsg_lines))
    record |= {"phys_base": facts.phys_base, "qmp_guid": run.qmp_guid}
    paths["facts"].write_text(json.dumps(record, indent=1, default=str) + "\n")
    return paths


def real_dumps_aarch64(
    directory: Path,
    scenario: str | Aarch64Scenario,
    *,
    kernel: KernelFiles | None = None,
    busybox: Path | None = None,
    initramfs_dir: Path | None = None,
) -> dict[str, Path]:
    """:func:`real_dumps` for an arm64 guest: ``elf``, ``kdump_zlib``, ``migration``, ``note``,
    ``serial_log`` and ``facts``, reused when ``directory`` already holds them for the same
    scenario, kernel and QEMU.  The kernel and busybox default to :func:`find_arm64_kernel` and
    :func:`arm64_busybox`.  ``facts.json`` adds ``kimage_voffset`` (the guest's ``_stext`` from
    /proc/kallsyms minus "Kernel code" from /proc/iomem)."""
    sc = AARCH64_SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    kernel = kernel or find_arm64_kernel()
    busybox = busybox or arm64_busybox()
    if kernel is None or busybox is None:
        raise QemuError("no arm64 guest: " + "; ".join(missing_aarch64_requirements()))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / fname for name, (fname, _, _) in AARCH64_DUMPS.items()}
    paths |= {
        "migration": directory / "migration.bin",
        "note": directory / "vmcoreinfo-note.bin",
        "serial_log": directory / "serial.log",
        "facts": directory / "facts.json",
    }
    cache_key = {"harness": HARNESS_VERSION, "arch": "aarch64", "scenario": asdict(sc),
                 "kernel": kernel.version, "qemu": qemu_version(QEMU_AARCH64)}
    with contextlib.suppress(OSError, ValueError, KeyError):
        if load_facts(paths)["cache_key"] == cache_key and all(p.is_file() for p in paths.values()):
            return paths
    paths["facts"].unlink(missing_ok=True)

    initramfs = build_initramfs(kernel, initramfs_dir or directory, busybox=busybox)
    guest = Guest(kernel, initramfs=initramfs, workdir=directory, vmcoreinfo=sc.vmcoreinfo,
                  firmware=sc.firmware, kaslr=sc.kaslr, smp=sc.smp, memory=sc.memory, machine=sc.machine,
                  kmsg_lines=sc.kmsg_lines, arch="aarch64", busybox=busybox, cpu=sc.cpu)
    with guest:
        run = _capture(guest, paths, AARCH64_DUMPS, vmgenid=False)
    facts = run.facts
    record = _record(cache_key, sc, kernel, run, guest, kmsg=bool(sc.kmsg_lines))
    record["kimage_voffset"] = (facts.kallsyms["_stext"] - facts.iomem("Kernel code")[0][0]) & ((1 << 64) - 1)
    paths["facts"].write_text(json.dumps(record, indent=1, default=str) + "\n")
    return paths


@dataclass
class Capture:
    """What one stopped moment of a guest gave: its facts, QMP's answers, the artefacts' timings."""

    facts: GuestFacts
    formats: Any
    qmp_guid: str | None
    command_line: list[str]
    timings: dict[str, float]


def _capture(guest: Guest, paths: dict[str, Path], dumps: dict[str, tuple[str, str, bool]], *,
             vmgenid: bool) -> Capture:
    """In a booted guest: ask QMP, stop the vCPUs, then save the note (``pmemsave``), every dump
    of ``dumps`` and the migration stream, all of one stopped moment."""
    timings = {"boot": guest.boot_seconds}
    facts = guest.facts
    qmp_guid = guest.query_vm_generation_id() if vmgenid else None
    formats = guest.query_dump_capability()
    guest.stop()
    guest.pmemsave(facts.vmcoreinfo_paddr, facts.vmcoreinfo_size, paths["note"])
    for name, (_, fmt, paging) in dumps.items():
        t0 = time.monotonic()
        guest.dump(paths[name], fmt, paging=paging)
        timings[name] = time.monotonic() - t0
    t0 = time.monotonic()
    guest.migrate_to_file(paths["migration"])
    timings["migration"] = time.monotonic() - t0
    return Capture(facts, formats, qmp_guid, guest.command_line(), timings)


def _record(cache_key: dict[str, Any], sc: Any, kernel: KernelFiles, run: Capture, guest: Guest, *,
            kmsg: bool) -> dict[str, Any]:
    """The ``facts.json`` keys every scenario records (``guest``: stopped, its console read to the end)."""
    facts = run.facts
    return {
        "cache_key": cache_key,
        "scenario": asdict(sc),
        "kernel": asdict(kernel),
        "qemu_version": cache_key["qemu"],
        "command_line": run.command_line,
        "guest": facts.raw,
        "release": facts.release,
        "vmcoreinfo_paddr": facts.vmcoreinfo_paddr,
        "vmcoreinfo_size": facts.vmcoreinfo_size,
        "kallsyms": facts.kallsyms,
        "system_ram": facts.iomem("System RAM"),
        "cpus": facts.cpus,
        "panic_line": guest.panic_line,
        "kmsg_written": int(facts.one("kmsg_written")) if kmsg else 0,
        "dump_formats": run.formats,
        "timings": run.timings,
    }


def load_facts(paths: dict[str, Path]) -> dict[str, Any]:
    """The ground truth :func:`real_dumps` recorded (``facts.json``)."""
    data = json.loads(paths["facts"].read_text())
    if not isinstance(data, dict):
        raise ValueError("facts.json does not hold an object")
    return data


@dataclass
class RealGuest:
    """The artefacts of one :func:`real_dumps` scenario: its ``paths`` and recorded ``facts``."""

    name: str
    paths: dict[str, Path]
    facts: dict[str, Any]

    @classmethod
    def load(cls, name: str, paths: dict[str, Path]) -> RealGuest:
        return cls(name, paths, load_facts(paths))

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]

    @property
    def note(self) -> bytes:
        """The note buffer as QEMU read it from guest RAM (``pmemsave``), 4132 bytes on 6.1."""
        return self.paths["note"].read_bytes()

    @property
    def note_desc(self) -> bytes:
        """The VMCOREINFO descriptor: ``descsz`` bytes after the 24-byte note header."""
        data = self.note
        descsz = int.from_bytes(data[4:8], "little")
        return data[24 : 24 + descsz]

    @property
    def vmcoreinfo_paddr(self) -> int:
        return int(self.facts["vmcoreinfo_paddr"])

    @property
    def guest(self) -> GuestFacts:
        """The guest's own report, parsed (``iomem("Kernel code")``, ``kallsyms``, ...)."""
        return GuestFacts(self.facts["guest"])
