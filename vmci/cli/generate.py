"""``vmci generate``: a synthetic dump made by emulating QEMU, firmware and the guest kernel.

Register with ``app.command()(generate)``.  Heavy modules are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vmci.producer import FORMATS

_FORMATS_HELP = f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]}."


def generate(
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="The dump to write; OUT.truth.json goes beside it.")
    ] = None,
    scenario_file: Annotated[
        Path | None, typer.Option("--scenario", help="A TOML scenario; the flags below override its keys.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=_FORMATS_HELP)] = "kdump-flat",
    compression: Annotated[
        str, typer.Option("--compression", help="kdump page compression: zlib, lzo, snappy, zstd, none.")
    ] = "zlib",
    seed: Annotated[int | None, typer.Option("--seed", help="Every random choice derives from it.")] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="x86_64 or aarch64 (an arm64 guest on QEMU's virt).")
    ] = None,
    ram: Annotated[str | None, typer.Option("--ram", help="Guest RAM, e.g. 32M, 4G.")] = None,
    machine: Annotated[str | None, typer.Option("--machine", help="q35 or pc (aarch64: virt).")] = None,
    firmware: Annotated[
        str | None, typer.Option("--firmware", help="seabios or ovmf (aarch64: none).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="rfc, upstream or none (aarch64: no rfc).")]
    = None,
    rfc_offset: Annotated[int | None, typer.Option("--rfc-offset", help="40 or 36.")] = None,
    vmgenid: Annotated[bool | None, typer.Option("--vmgenid/--no-vmgenid", help="Add a vmgenid device.")]
    = None,
    kernel: Annotated[str | None, typer.Option("--kernel", help="4.9, 4.19, 5.10, 6.1, 6.9 or 6.12.")] = None,
    kaslr: Annotated[bool | None, typer.Option("--kaslr/--nokaslr", help="Randomise the kernel.")] = None,
    la57: Annotated[bool | None, typer.Option("--la57/--no-la57", help="5-level paging.")] = None,
    pti: Annotated[bool | None, typer.Option("--pti/--no-pti", help="Page-table isolation (aarch64: KPTI).")]
    = None,
    page_size: Annotated[
        int | None, typer.Option("--page-size", help="aarch64: 4096, 16384 or 65536.")
    ] = None,
    va_bits: Annotated[int | None, typer.Option("--va-bits", help="aarch64: 39, 42, 47, 48 or 52.")] = None,
    byteorder: Annotated[str | None, typer.Option("--byteorder", help="aarch64: little or big.")] = None,
    cpus: Annotated[int | None, typer.Option("--cpus", help="Number of vCPUs.")] = None,
    panic: Annotated[bool | None, typer.Option("--panic/--no-panic", help="CRASHTIME in the text.")] = None,
    log: Annotated[
        int | None, typer.Option("--log", help="Messages the guest kernel logs into its printk buffer "
                                 "(with --panic, then the panic).")
    ] = None,
    panic_cause: Annotated[
        str | None, typer.Option("--panic-cause", help="sysrq, null-deref, oom, hung-task or soft-lockup.")
    ] = None,
    log_fault: Annotated[
        list[str] | None, typer.Option("--log-fault", help="Damage the log (repeatable): wrap, half-written, "
                                       "stuck-writer, reused-descriptor, corrupt-id, corrupt-len, truncated.")
    ] = None,
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="Inject a fault (repeatable); see --list-faults.")
    ] = None,
    phys_base_bug: Annotated[
        bool | None,
        typer.Option("--phys-base-bug/--no-phys-base-bug", help="kdump: QEMU's hexadecimal phys_base parse."),
    ] = None,
    list_faults: Annotated[bool, typer.Option("--list-faults", help="List the faults and exit.")] = False,
) -> None:
    """Generate a dump by emulating the guest, QEMU's devices, the firmware and QEMU's dump writer.

    Writes OUT, OUT.truth.json (every address, the blobs, expected findings) and the saved blobs:
    OUT.addr-blob (RFC device), OUT.fw-cfg-record (upstream), OUT.vmgenid-addr (vmgenid).
    The same scenario and seed give byte-identical files.
    """
    from vmci.errors import UsageError, VmciError
    from vmci.producer.config import FAULT_SPECS, Scenario, merge_flags

    try:
        if list_faults:
            for f in FAULT_SPECS.values():
                typer.echo(f"{f.name:24} {f.stage:13} {f.description}")
            return
        from vmci.producer.scenario import generate as run

        if out is None:
            raise UsageError("--output/-o is required")
        if fmt not in FORMATS:
            raise UsageError(f"--format is one of {', '.join(FORMATS)}, not {fmt!r}")
        flags = {"seed": seed, "arch": arch, "ram": ram, "machine": machine, "firmware": firmware,
                 "device": device, "rfc_offset": rfc_offset, "vmgenid": vmgenid, "kernel": kernel,
                 "kaslr": kaslr, "la57": la57, "pti": pti, "cpus": cpus, "panic": panic,
                 "phys_base_bug": phys_base_bug, "log": log, "panic_cause": panic_cause,
                 "log_faults": log_fault or None,
                 "page_size": page_size, "va_bits": va_bits, "byteorder": byteorder}
        base = Scenario.from_toml(scenario_file) if scenario_file else None
        truth = run(merge_flags(base, flags, fault or ()), out, fmt, compression=compression)
    except VmciError as e:
        typer.echo(f"vmci: error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    note = truth["dump"]["guest_note"]
    typer.echo(f"wrote {truth.path} ({fmt}) and {truth.truth_path.name}")
    typer.echo(f"vmcoreinfo note at {truth['vmcoreinfo']['note_paddr']:#x}; in the dump: "
               + ("yes" if note["appended"] else f"no ({note['warning']})"))
    for key in ("addr_blob", "fw_cfg_record", "vmgenid_addr"):
        name = truth["files"][key]
        if name:
            typer.echo(f"{key.replace('_', '-')}: {truth.path.with_name(name)}")
