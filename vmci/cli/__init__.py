"""The ``vmci`` command line: a thin typer layer over the library.

Heavy modules (pyelftools, construct, codecs, drgn) are imported inside the commands so that
``vmci --help`` and quick commands start fast.  Every :class:`~vmci.errors.VmciError` becomes one
line on stderr and its documented exit code (see :mod:`vmci.errors`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from vmci.errors import UsageError, VmciError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Find, check and use the Linux VMCOREINFO in virtual-machine memory dumps.",
    epilog="Exit codes: 0 ok, 1 negative answer, 2 usage, 3 bad or unsupported dump, "
    "4 address not in the dump, 5 OS error.",
)

DumpArg = Annotated[Path, typer.Argument(help="The dump file (ELF, kdump, flattened kdump, raw).")]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Force a reader: auto, elf, kdump, flattened, raw.")
]
BaseOpt = Annotated[str, typer.Option("--raw-base", help="Physical address of a raw image's first byte.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def parse_int(text: str, what: str) -> int:
    """An integer from ``0x…``, decimal, or with a K/M/G suffix (powers of 1024)."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    if t and t[-1] in "kmg" and not t.startswith("0x"):
        mult = 1 << {"k": 10, "m": 20, "g": 30}[t[-1]]
        t = t[:-1]
    try:
        value = int(t, 0) * mult
    except ValueError:
        raise UsageError(f"{what} must be an integer (decimal or 0x-hex), not {text!r}") from None
    if value < 0:
        raise UsageError(f"{what} must not be negative")
    return value


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except VmciError as e:
        typer.echo(f"vmci: error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("vmci: interrupted", err=True)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        raise typer.Exit(0) from None


def jsonable(value: Any) -> Any:
    """Convert facts to JSON types: bytes become text, tuples lists, keys strings."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return value


def _open(dump: Path, format: str, raw_base: str) -> Any:
    from vmci.formats import open_dump

    return open_dump(dump, format=format, raw_base=parse_int(raw_base, "--raw-base"))


@app.command()
def info(
    dump: DumpArg, json_out: JsonOpt = False, format: FormatOpt = "auto", raw_base: BaseOpt = "0"
) -> None:
    """Describe a dump: format, architecture, memory ranges, notes, CPUs and header facts."""
    with _errors(), _open(dump, format, raw_base) as d:
        from vmci.analysis.report import dump_summary

        summary = dump_summary(d)
        if json_out:
            typer.echo(json.dumps(jsonable(summary), indent=2))
            return
        from vmci.cli.render import render_info

        render_info(summary)


@app.command()
def read(
    dump: DumpArg,
    paddr: Annotated[str, typer.Argument(help="Physical address (0x-hex or decimal).")],
    length: Annotated[str, typer.Argument(help="Number of bytes (suffixes K, M, G allowed).")],
    hexdump: Annotated[
        bool, typer.Option("--hex", "-x", help="Print a hex dump instead of raw bytes.")
    ] = False,
    zero_fill: Annotated[
        bool, typer.Option("--zero-fill", help="Read holes and excluded pages as zeros instead of failing.")
    ] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Read physical memory, like crash's 'rd -p': raw bytes to stdout, or a hex dump (--hex)."""
    with _errors():
        addr = parse_int(paddr, "PADDR")
        n = parse_int(length, "LENGTH")
        if n > 1 << 30:
            raise UsageError("LENGTH is limited to 1 GiB per read")
        with _open(dump, format, raw_base) as d:
            out = sys.stdout.buffer
            step = 1 << 20
            for pos in range(addr, addr + n, step):
                data = d.memory.read(pos, min(step, addr + n - pos), zero_fill=zero_fill)
                out.write(hexdump_lines(pos, data).encode() if hexdump else data)
            out.flush()


def hexdump_lines(addr: int, data: bytes) -> str:
    """crash-style lines: address, 16 bytes in hex, printable ASCII."""
    lines = []
    for off in range(0, len(data), 16):
        row = data[off : off + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{addr + off:16x}:  {hexes:<47}  {text}\n")
    return "".join(lines)


# -- analyze, vmcoreinfo, vmgenid -------------------------------------------------------------------

BlobOpt = Annotated[
    str | None,
    typer.Option("--addr-blob", help="The RFC device's saved etc/vmcoreinfo-addr: a file of 8 bytes, "
                 "16 hex digits as stored (little-endian, e.g. 28e0ff0700000000), or 0x<address>."),
]
RecordOpt = Annotated[
    str | None,
    typer.Option("--fw-cfg-record", help="The upstream etc/vmcoreinfo record: a file of 16 bytes or "
                 "32 hex digits as stored."),
]


def blob_arg(value: str, what: str, size: int) -> bytes:
    """Bytes from a file, hex digits as stored (spaces and colons allowed), or ``0x<integer>``
    (encoded little-endian in ``size`` bytes)."""
    path = Path(value)
    if path.is_file():
        try:
            actual = path.stat().st_size
            if actual != size:  # checked before reading: the path may name anything
                raise UsageError(f"{what}: {value} holds {actual} bytes, not {size}")
            return path.read_bytes()
        except OSError as e:
            raise UsageError(f"{what}: cannot read {value}: {e.strerror}") from None
    text = value.strip().lower()
    if text.startswith("0x"):
        n = parse_int(text, what)
        if n >> (8 * size):
            raise UsageError(f"{what}: {value} does not fit {size} bytes")
        return n.to_bytes(size, "little")
    digits = text.replace(" ", "").replace(":", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise UsageError(f"{what} is neither a file nor hex digits: {value!r}") from None
    if len(data) != size:
        raise UsageError(f"{what}: {len(data)} bytes given, the blob is {size}")
    return data


class _LazyProgress:
    """A rich progress bar that appears only once a scan has run for more than a second."""

    def __init__(self) -> None:
        import time

        self._clock = time.monotonic
        self._start: float | None = None
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
        if self._bar is None:
            if now - self._start < 1.0 or done >= total:
                return
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task("scanning memory", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@app.command()
def analyze(
    dump: DumpArg,
    addr_blob: BlobOpt = None,
    fw_cfg_record: RecordOpt = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option("--strategy", "-s", help="Run only this strategy (repeatable): elf-note, kdump-header, "
                     "address-blob, fw-cfg-record, acpi, memory-scan."),
    ] = None,
    rfc_offset: Annotated[
        int, typer.Option("--rfc-offset", help="RFC page layout: 40 (seed 001) or 36 (later revision).")
    ] = 40,
    json_out: JsonOpt = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Find and check the VMCOREINFO: every strategy with its evidence, consistency checks, key values.

    Exit status: 0 when a VMCOREINFO text was found and no check FAILed; 1 when none was found
    or a check FAILed; 2 usage; 3 bad dump; 4 address not in the dump; 5 OS error.
    """
    with _errors():
        if rfc_offset not in (40, 36):
            raise UsageError(f"--rfc-offset is 40 or 36, not {rfc_offset}")
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        record = blob_arg(fw_cfg_record, "--fw-cfg-record", 16) if fw_cfg_record is not None else None
        progress = None if json_out else _LazyProgress()
        with _open(dump, format, raw_base) as d:
            from vmci.analysis.analyze import analyze as run_analyze

            try:
                result = run_analyze(d, addr_blob=blob, fw_cfg_record=record, strategies=strategy or None,
                                     rfc_offset=rfc_offset, progress=progress)
            finally:
                if progress is not None:
                    progress.close()
        if json_out:
            typer.echo(json.dumps(result, indent=2))
        else:
            from vmci.cli.render import render_analysis

            render_analysis(result)
        if not result["vmcoreinfo"]["found"] or result["status"] == "FAIL":
            raise typer.Exit(1)


@app.command()
def vmcoreinfo(
    dump: DumpArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    note: Annotated[bool, typer.Option("--note", help="The whole ELF note, not just the text.")] = False,
    addr_blob: BlobOpt = None,
    synthesize: Annotated[
        bool, typer.Option("--synthesize", help="When no text is found, synthesize one from the page tables "
                           "and the kernel image (marked VMCI_SYNTHESIZED=1; x86_64).")
    ] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Print the VMCOREINFO text exactly as found (ready for ``drgn --vmcoreinfo``), or the ELF note.

    Exit status: 0 found (or synthesized), 1 not found, 2-5 as for every command.
    """
    with _errors():
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        with _open(dump, format, raw_base) as d:
            from vmci.discover.run import find_vmcoreinfo
            from vmci.errors import NotFoundError

            disc = find_vmcoreinfo(d, addr_blob=blob)
            if (disc.chosen is None or disc.chosen.text is None) and synthesize:
                from vmci.kernel.synthesize import synthesize as make

                raw = make(d).text
                typer.echo("vmci: no VMCOREINFO found; this text is SYNTHESIZED from the page tables",
                           err=True)
            elif disc.chosen is None or disc.chosen.text is None:
                raise NotFoundError(f"no VMCOREINFO in {dump}: {disc.reason}")
            else:
                raw = disc.chosen.text.raw
        if note:
            from vmci.kernel.vmcoreinfo import build_note

            raw = build_note(raw, d.byte_order)
        if output is not None:
            try:
                output.write_bytes(raw)
            except OSError as e:
                raise typer.Exit(_os_error(output, e)) from None
        else:
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()


def _os_error(path: Path, e: OSError) -> int:
    typer.echo(f"vmci: error: cannot write {path}: {e.strerror}", err=True)
    return 5


@app.command()
def vmgenid(
    dump: DumpArg,
    addr_blob: Annotated[
        str | None,
        typer.Option("--addr-blob", help="The saved etc/vmgenid_addr (8 bytes: file, hex as stored, "
                     "or 0x<address>); default: walk ACPI (SSDT VMGENID, VGIA)."),
    ] = None,
    json_out: JsonOpt = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Print the VM Generation ID as QMP query-vm-generation-id does (exit 1 when there is none)."""
    with _errors():
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        with _open(dump, format, raw_base) as d:
            from vmci.analysis.vmgenid import find_vmgenid_in_dump
            from vmci.errors import NotFoundError

            found = find_vmgenid_in_dump(d, addr_blob=blob)
        if json_out:
            typer.echo(json.dumps({"schema": 1, **found.to_dict(), "evidence": found.evidence.to_dict()},
                                  indent=2))
            if not found.found:
                raise typer.Exit(1)
            return
        if not found.found:
            last = next((s for s in reversed(found.evidence.steps) if s.verdict == "fail"), None)
            raise NotFoundError(f"no VM generation ID: {last.action}: {last.detail}" if last
                                else "no VM generation ID")
        typer.echo(f"{found.to_dict()['guid']}")


# -- generate --------------------------------------------------------------------------------------

from vmci.cli.generate import generate as _generate  # noqa: E402 - typer-only module, heavy imports inside

app.command("generate")(_generate)


# -- kaslr, drgn ----------------------------------------------------------------------------------

SymbolsOpt = Annotated[
    Path | None,
    typer.Option("--system-map", help="A System.map, vmlinux or vmlinuz (bzImage) of the dumped kernel: "
                 "exact symbol addresses and cross-checks."),
]


@app.command()
def kaslr(
    dump: DumpArg,
    json_out: JsonOpt = False,
    system_map: SymbolsOpt = None,
    scan: Annotated[
        bool, typer.Option("--scan", help="Also run every discovery strategy (memory scan included) to find "
                           "a VMCOREINFO to compare with; default: the dump's own note / kdump header only.")
    ] = False,
    addr_blob: BlobOpt = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also search the image for init_uts_ns and swapper_pg_dir.")
    ] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """KERNELOFFSET and phys_base: from the VMCOREINFO and, independently, from the vCPUs' page tables.

    Exit status: 0 when an answer exists and the sources agree, 1 when there is none or they conflict.
    """
    with _errors():
        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        syms = None
        if system_map is not None:
            from vmci.kernel.kaslr import load_symbols

            syms = load_symbols(system_map)
        with _open(dump, format, raw_base) as d:
            from vmci.kernel.kaslr import kaslr_section, vmcoreinfo_for_kaslr

            text, source = vmcoreinfo_for_kaslr(d, scan=scan, addr_blob=blob)
            result = kaslr_section(d, vmcoreinfo=text, source=source, symbols=syms, deep=deep)
        if json_out:
            typer.echo(json.dumps({"schema": 1, **result}, indent=2))
        else:
            from vmci.cli.render import render_kaslr

            render_kaslr(result)
        if result["kerneloffset"] is None or result.get("verdict") == "conflict":
            raise typer.Exit(1)


@app.command(context_settings={"allow_interspersed_args": True})
def drgn(
    dump: DumpArg,
    exec_code: Annotated[
        str | None, typer.Option("--exec-code", "-e", help="Run this Python code with drgn's globals "
                                 "(prog, ...) instead of the REPL.")
    ] = None,
    symbols: Annotated[
        list[Path] | None,
        typer.Option("--symbols", "-s", help="Load debug info from this file (repeatable)."),
    ] = None,
    no_default_symbols: Annotated[
        bool, typer.Option("--no-default-symbols", help="Do not look for vmlinux and modules by release.")
    ] = False,
    vmcoreinfo_file: Annotated[
        Path | None, typer.Option("--vmcoreinfo", help="Use this VMCOREINFO text instead of discovering it.")
    ] = None,
    addr_blob: BlobOpt = None,
    no_synthesize: Annotated[
        bool, typer.Option("--no-synthesize", help="Fail instead of synthesizing a VMCOREINFO.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No vmci banner line.")] = False,
    format: FormatOpt = "auto",
    raw_base: BaseOpt = "0",
) -> None:
    """Open drgn's REPL on DUMP with the VMCOREINFO vmci found (or synthesized), for dumps drgn refuses alone.

    Also for QEMU kdump (platform passed) and flattened files.  Needs drgn (pip install 'vmci[drgn]').
    """
    with _errors():
        from vmci.integrations.drgn import run_interactive

        blob = blob_arg(addr_blob, "--addr-blob", 8) if addr_blob is not None else None
        run_interactive(dump, exec_code=exec_code, quiet=quiet, vmcoreinfo=vmcoreinfo_file, addr_blob=blob,
                        synthesize=not no_synthesize, debug_info=symbols or (),
                        default_debug_info=not no_default_symbols, format=format,
                        raw_base=parse_int(raw_base, "--raw-base"))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
