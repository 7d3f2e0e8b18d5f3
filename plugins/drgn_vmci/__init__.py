"""vmci's drgn plugin (entry point ``vmci`` in the ``drgn.plugins`` group).

- ``%vmci kaslr|provenance|checks|release [--json]`` (``drgn.commands``): one command per action
  in the :data:`VMCI_COMMANDS` namespace, reached through ``%vmci`` as drgn's ``%crash`` reaches
  crash commands; on the program's core dump (``prog.core_dump_path``, or the dump
  :func:`vmci.integrations.drgn.program_from_dump` recorded).  Output is vmci's own rendering
  (:mod:`vmci.cli.render`) of its typed results; each command returns what ``--json`` prints;
- a ``drgn_prog_set`` hook that warns when a kernel program's VMCOREINFO lacks ``KERNELOFFSET`` or
  ``NUMBER(phys_base)``, when the text is synthesized, when vmci's page-table answer disagrees with
  what drgn loaded, and when a dump drgn took for a userspace core holds a kernel.  Set
  ``VMCI_DRGN_CHECK=0`` to skip the page-table comparison.  Failures only warn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import drgn
from drgn.commands import CommandNamespace, argument, command, raw_command

if TYPE_CHECKING:
    from vmci.analysis.result import AnalyzeResult

log = logging.getLogger("drgn.plugins.vmci")
#: The ``%vmci`` actions, one drgn command each.
VMCI_COMMANDS = CommandNamespace(func_name_prefix="_vmci_cmd_")
DEFAULT_ACTION = "kaslr"
_JSON = argument("--json", action="store_true", help="print JSON")


def _text(prog: drgn.Program) -> bytes | None:
    try:
        return prog["VMCOREINFO"].string_()
    except (LookupError, drgn.FaultError, ValueError):
        return None


def dump_path(prog: drgn.Program) -> str | None:
    """The dump behind ``prog``: drgn's core dump path, else what vmci recorded."""
    rec = prog.cache.get("vmci") if hasattr(prog, "cache") else None
    if isinstance(rec, dict) and rec.get("dump"):
        return str(rec["dump"])
    path = getattr(prog, "core_dump_path", None)
    return str(path) if path and os.path.isfile(path) else None


def _require_dump(prog: drgn.Program) -> str:
    path = dump_path(prog)
    if path is None:
        raise ValueError("the program has no core dump file vmci can open")
    return path


def kaslr_dict(prog: drgn.Program) -> dict[str, Any]:
    """vmci's KASLR report for the program's dump, compared with the program's own VMCOREINFO."""
    from vmci.formats import open_dump
    from vmci.kernel.kaslr import kaslr_report
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    path = _require_dump(prog)
    raw = _text(prog)
    vi = VmcoreInfo.parse(raw) if raw is not None else None
    with open_dump(path) as d:
        rep = kaslr_report(d, vmcoreinfo=vi, vmcoreinfo_source="drgn's VMCOREINFO")
    return rep.to_dict()


def _analysis(prog: drgn.Program) -> AnalyzeResult:
    from vmci.analysis.analyze import analyze
    from vmci.formats import open_dump

    with open_dump(_require_dump(prog)) as d:
        return analyze(d, vmgenid=False)


def _synthesized(prog: drgn.Program) -> bool:
    from vmci.kernel.vmcoreinfo import is_synthesized

    raw = _text(prog)
    return raw is not None and is_synthesized(raw)


@raw_command(
    description="vmci: KASLR, provenance and checks of the VMCOREINFO",
    usage="**vmci** [*action*] [--json]",
    long_description="Run a vmci action on the program's dump: kaslr (default), provenance, checks, "
    "or release.  Each is a command of its own; ``%vmci ACTION --help`` describes it.",
)
def _cmd_vmci(prog: drgn.Program, name: str, args: str, *, globals: dict[str, Any], **kwargs: Any) -> Any:
    line = args.strip()
    if not line or line.startswith("-"):
        line = f"{DEFAULT_ACTION} {line}"
    return VMCI_COMMANDS.run(prog, line, globals=globals)


@command(description="KERNELOFFSET and phys_base: the VMCOREINFO drgn loaded vs the page tables",
         arguments=(_JSON,), namespace=VMCI_COMMANDS)
def _vmci_cmd_kaslr(prog: drgn.Program, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    k = kaslr_dict(prog)
    if args.json:
        print(json.dumps(k, indent=2))
    else:
        from vmci.cli.render import render_kaslr

        render_kaslr(k)
    return k


@command(description="where drgn's VMCOREINFO came from, and every discovery strategy's evidence",
         arguments=(_JSON,), namespace=VMCI_COMMANDS)
def _vmci_cmd_provenance(prog: drgn.Program, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    result = _analysis(prog)
    rec = prog.cache.get("vmci", {})
    synthesized = _synthesized(prog)
    found = {k: result.vmcoreinfo.to_dict()[k] for k in ("found", "source", "paddr", "reason")}
    out: Any = {"loaded_from": rec or {"source": "drgn"}, "synthesized": synthesized,
                "vmcoreinfo": found, "provenance": [s.to_dict() for s in result.provenance]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        from vmci.cli.render import console, render_provenance, render_vmcoreinfo

        c = console()
        c.print(f"drgn's VMCOREINFO: {rec.get('source', 'from the dump (drgn)')}"
                + (" -- SYNTHESIZED by vmci from the page tables" if synthesized else ""), markup=False)
        render_provenance(result.provenance, c)
        render_vmcoreinfo(result.vmcoreinfo, c)
    return out


@command(description="vmci's consistency checks of the dump's VMCOREINFO", arguments=(_JSON,),
         namespace=VMCI_COMMANDS)
def _vmci_cmd_checks(prog: drgn.Program, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    result = _analysis(prog)
    checks = [c.to_dict() for c in result.checks]
    if args.json:
        print(json.dumps(checks, indent=2))
    else:
        from vmci.cli.render import render_checks

        render_checks(result.checks, result.status)
    return checks


@command(description="the kernel release, read through drgn's VMCOREINFO", arguments=(_JSON,),
         namespace=VMCI_COMMANDS)
def _vmci_cmd_release(prog: drgn.Program, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    from vmci.kernel.synthesize import release_via
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    raw = _text(prog)
    rel = release_via(VmcoreInfo.parse(raw), prog.read) if raw is not None else None
    print(json.dumps(rel) if args.json else rel)
    return rel


@command(description="the kernel log, from drgn's VMCOREINFO and memory alone (no debuginfo), as "
                     "makedumpfile --dump-dmesg prints it",
         arguments=(_JSON, argument("--caller", action="store_true", help="add the caller field"),
                    argument("--since-clear", action="store_true", help="records since the last dmesg -C"),
                    argument("-n", "--tail", type=int, help="only the last N records")),
         namespace=VMCI_COMMANDS)
def _vmci_cmd_dmesg(prog: drgn.Program, name: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    from vmci.integrations.drgn import DrgnKernelReader
    from vmci.kernel.printk import format_dmesg, format_json_lines, get_printk_records
    from vmci.kernel.vmcoreinfo import VmcoreInfo

    raw = _text(prog)
    if raw is None:
        print("vmci: drgn has no VMCOREINFO for this program")
        return None
    log = get_printk_records(DrgnKernelReader(prog, VmcoreInfo.parse(raw)), since_clear=args.since_clear)
    for w in log.warnings:
        print(f"vmci: warning: {w}")
    out = format_json_lines(log, tail=args.tail) if args.json else \
        format_dmesg(log, caller=args.caller, tail=args.tail)
    sys.stdout.write(out.decode("utf-8", "backslashreplace"))
    return log


def _check(prog: drgn.Program) -> list[str]:
    """The warnings the hook prints (also used by tests)."""
    from vmci.kernel.vmcoreinfo import VmcoreInfo, is_synthesized

    out: list[str] = []
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        path = dump_path(prog)
        if path is None:
            return out
        from vmci.discover.run import find_vmcoreinfo
        from vmci.formats import open_dump

        with open_dump(path) as d:
            from vmci.arch import lookup

            if lookup(d.arch) is None:
                return out
            found = find_vmcoreinfo(d).chosen
        if found is not None:
            out.append(f"{path} holds a Linux kernel (VMCOREINFO found by {found.source}) but drgn loaded it "
                       f"as a userspace core; run `vmci drgn {path}` or "
                       f"`vmci vmcoreinfo {path} -o F && drgn --vmcoreinfo F -c {path}`")
        return out
    raw = _text(prog)
    if raw is None:
        return out
    vi = VmcoreInfo.parse(raw)
    if is_synthesized(vi):
        out.append("this VMCOREINFO was SYNTHESIZED by vmci from the page tables (no kernel note survived)")
    missing = [k for k in ("KERNELOFFSET", "NUMBER(phys_base)") if k not in vi]
    if missing and not any(k in vi for k in ("NUMBER(kimage_voffset)", "NUMBER(VA_BITS)")):
        out.append(f"VMCOREINFO lacks {' and '.join(missing)}: kernel addresses may be wrong under KASLR; "
                   "`%vmci kaslr` shows what the page tables say")
    if os.environ.get("VMCI_DRGN_CHECK", "1") != "0" and dump_path(prog) is not None:
        k = kaslr_dict(prog)
        if k["verdict"] == "conflict":
            out += [f"vmci disagrees with the VMCOREINFO drgn loaded: {w}" for w in k["warnings"]
                    if "disagree" in w]
    return out


def drgn_prog_set(prog: drgn.Program) -> None:
    try:
        for w in _check(prog):
            log.warning("vmci: %s", w)
    except Exception as e:  # a plugin must never break drgn
        log.warning("vmci: check failed: %s: %s", type(e).__name__, e)


drgn_prog_set.drgn_priority = 60  # type: ignore[attr-defined]
